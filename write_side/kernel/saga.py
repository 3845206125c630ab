"""A service's saga worker: a Faust agent feeding other services' events to its Reactor."""

import asyncio
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import faust

from write_side.kernel.application import App
from write_side.kernel.kafka import reliable_producer, stop_producer
from write_side.kernel.messaging import ConsumedMessage, DeadLetters
from write_side.kernel.reactions import Reaction, Reactor
from write_side.kernel.settings import KafkaSettings
from write_side.kernel.streams import faust_app, retry_until_done


def saga_worker(
    service: str,
    topics: Sequence[str],
    open_application: Callable[[], App],
    reactions: Callable[[App], Sequence[Reaction]],
    settings: KafkaSettings | None = None,
) -> faust.App:
    """The Faust app of ``<service>-saga``: run it with
    ``faust -A write_side.<service>.saga:app worker --without-web``.

    ``reactions(application)`` gives the service's reactions, bound to the
    Application the worker opens on the service's own store.
    """
    settings = settings or KafkaSettings()
    consumer = f"{service}-saga"
    app = faust_app(consumer, settings)
    channel = app.topic(
        *topics, key_type=bytes, value_type=bytes, partitions=settings.kafka_topic_partitions
    )

    async def react(stream: Any) -> None:
        application = open_application()
        reactor = Reactor(application, consumer, reactions(application))
        producer = reliable_producer(settings.kafka_bootstrap_servers)
        await producer.start()
        dead_letters = DeadLetters(producer, consumer)
        stopping = asyncio.Event()
        try:
            async for events in stream.take_events(100, within=0.05):
                for event in events:
                    message = ConsumedMessage.of(event)
                    await retry_until_done(
                        partial(_react, reactor, dead_letters, message),
                        f"{consumer} {message.topic}[{message.partition}]@{message.offset}",
                        stopping,
                    )
        finally:
            stopping.set()
            await stop_producer(producer)
            application.close()

    app.agent(channel, name=f"{consumer}.react")(react)
    return app


async def _react(reactor: Reactor, dead_letters: DeadLetters, message: ConsumedMessage) -> None:
    reason = await asyncio.to_thread(reactor.react, message)
    if reason is not None:
        await dead_letters.send([(message, reason)])
        await asyncio.to_thread(reactor.skip, message)
