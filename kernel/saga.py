"""A service's saga worker: a Faust agent feeding other services' events to its Reactor."""

import asyncio
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import faust

from contracts.registry import topic_of
from kernel import health as process_health
from kernel import metrics, tracing
from kernel.application import App
from kernel.kafka import reliable_producer, stop_producer
from kernel.messaging import ConsumedMessage, DeadLetters
from kernel.reactions import MAX_ROUNDS, MessageKey, Reaction, Reactor, key_of
from kernel.settings import KafkaSettings
from kernel.streams import faust_app, handle_batches, retry_until_done

BATCH_SIZE = 500
"""At most this many messages are handled in one transaction."""


def saga_worker(
    service: str,
    open_application: Callable[[], App],
    reactions: Sequence[Reaction[App, Any]],
    settings: KafkaSettings | None = None,
) -> faust.App:
    """The Faust app of ``<service>-saga``: run it with
    ``faust -A write_side.<service>.saga:app worker --without-web``.

    It reads the topics of the reactions' events; their handlers are called with the
    Application that ``open_application`` opens (once the worker runs, not at import) on
    the service's own store.
    """
    if not reactions:
        raise ValueError(f"{service}-saga has no reactions")
    settings = settings or KafkaSettings()
    consumer = f"{service}-saga"
    tracing.configure_tracing(consumer)
    app = faust_app(consumer, settings)
    channel = app.topic(
        *topics_of(reactions),
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka_topic_partitions,
    )

    async def react(stream: Any) -> None:
        application = open_application()
        reactor = Reactor(application, consumer, reactions)
        producer = reliable_producer(settings.kafka_bootstrap_servers)
        await producer.start()
        dead_letters = DeadLetters(producer, consumer)
        stopping = asyncio.Event()
        health = process_health.current()
        health.add_check("broker", lambda: process_health.broker_check(producer))
        health.add_check("store", process_health.store_check(application.recorder))

        async def react_batch(events: Sequence[Any]) -> None:
            batch = [ConsumedMessage.of(event) for event in events]
            first, last = key_of(batch[0]), key_of(batch[-1])
            await retry_until_done(
                partial(handle, reactor, dead_letters, batch),
                f"{consumer} {len(batch)} messages from {first} to {last}",
                stopping,
            )

        try:
            await handle_batches(stream, BATCH_SIZE, react_batch, name=f"{consumer}.react")
        finally:
            stopping.set()
            await stop_producer(producer)
            application.close()

    app.agent(channel, name=f"{consumer}.react")(react)
    return app


def topics_of(reactions: Iterable[Reaction[Any, Any]]) -> list[str]:
    """The topics the reactions' events are published on, each once, in the reactions'
    order."""
    return list(dict.fromkeys(topic_of(reaction.event) for reaction in reactions))


async def handle(
    reactor: Reactor, dead_letters: DeadLetters, batch: Sequence[ConsumedMessage]
) -> None:
    """Handle a batch in one transaction (more only for conflicts and dead letters), in a
    span of its own linked to the messages' traces (each reaction's span is the child of
    its message's: ``Reactor``)."""
    span = tracing.batch_span(
        f"{reactor.consumer} batch",
        (message.headers for message in batch),
        attributes={"messaging.batch.message_count": len(batch)},
    )
    with tracing.current_span(span):
        await _handle(reactor, dead_letters, batch)


async def _handle(
    reactor: Reactor, dead_letters: DeadLetters, batch: Sequence[ConsumedMessage]
) -> None:
    todo, dead_lettered = list(batch), set[MessageKey]()
    consumer = reactor.consumer
    for _ in range(MAX_ROUNDS):
        result = await asyncio.to_thread(reactor.react_batch, todo, dead_lettered)
        if result.dead_letters:  # before their positions are recorded
            await dead_letters.send(result.dead_letters)
            dead_lettered.update(key_of(message) for message, _ in result.dead_letters)
            metrics.reactions(consumer, "dead-lettered", len(result.dead_letters))
        if result.error is not None:
            metrics.reactions(consumer, "retried", len(todo))
            raise result.error
        reruns = len(result.again) - len(result.dead_letters)
        metrics.reactions(consumer, "done", len(todo) - len(result.again))
        metrics.reactions(consumer, "rerun", reruns)
        if not result.again:
            return
        todo = result.again
    raise TimeoutError(f"{reactor.consumer}: a batch kept conflicting ({MAX_ROUNDS} rounds)")
