"""Faust workers: one way to build the app, to take batches, to retry a batch until it is done."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError
from sqlalchemy.exc import DBAPIError

from write_side.kernel.kafka import fetch_wakeups, pace_empty_fetches
from write_side.kernel.settings import KafkaSettings

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    PyMongoError,
    KafkaError,
    DBAPIError,
    OSError,
    TimeoutError,
)
"""Infrastructure failures: the work is retried, never dropped or dead-lettered."""


def faust_app(app_id: str, settings: KafkaSettings, data_dir: str = "var/faust") -> faust.App:
    """A Faust app reading raw bytes (decoding is ours, so bad bytes can be dead-lettered).

    Its consumer does not spin on a broker that answers empty fetches at once
    (`pace_empty_fetches`), and is woken by the relays' announcements where they are
    heard (`FetchWakeups`)."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    pace_empty_fetches(
        settings.kafka_empty_fetch_interval,
        fetch_wakeups(settings),
        settings.kafka_empty_fetch_interval_with_wakeups,
    )
    return faust.App(
        app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        web_enabled=False,
        datadir=f"{data_dir}/{{conf.name}}",
    )


async def retry_until_done(
    work: Callable[[], Awaitable[None]], what: str, stopping: asyncio.Event | None = None
) -> None:
    """Run ``work`` until it succeeds, backing off on infrastructure errors.

    A batch is acknowledged once its handler returns (when the agent's loop moves on,
    or in ``handle_batches``), so it must be finished (or dead-lettered) before this
    returns; while a server is away the worker waits instead of losing the batch.
    Anything else is a bug and propagates.
    """
    delay = 0.1
    while True:
        try:
            await work()
            return
        except TRANSIENT_ERRORS as error:
            if stopping is not None and stopping.is_set():
                raise
            log.warning("%s failed (%r); retrying in %.1fs", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def handle_batches(
    stream: Any,
    size: int,
    within: float,
    handle: Callable[[Sequence[Any]], Awaitable[None]],
) -> None:
    """Take the stream's events in batches and ``handle`` each, in order, one at a time,
    while the next batch is being taken.

    Faust does its own per-message work as it fills a batch (about 150 µs a message
    here); with plain ``take_events`` that work and the handling of the batch before
    take turns. Here they overlap: the next batch is taken in a task of its own while
    this one is handled in the caller's task (so an error of ``handle`` is raised at
    once). A batch is still acknowledged only once handled: ``take_events``
    acknowledges a batch's events as soon as the next batch is asked for, so each
    message is held (one more reference, Faust's own counting) until ``handle`` has
    finished with it. If the worker stops or dies meanwhile, a held message is never
    acknowledged and comes again (at least once).
    """
    batches = aiter(stream.take_events(size, within=within))
    taking: asyncio.Future[Sequence[Any]] = asyncio.ensure_future(anext(batches))
    try:
        while True:
            try:
                events = await taking
            except StopAsyncIteration:
                return
            _hold(events)
            taking = asyncio.ensure_future(anext(batches))
            await handle(events)
            for event in events:
                await stream.ack(event)
    finally:
        taking.cancel()
        with suppress(asyncio.CancelledError, Exception):  # the error that ends us counts
            _hold(await taking)  # taken, and will not be handled: never acknowledged


def _hold(events: Sequence[Any]) -> None:
    for event in events:
        event.message.incref()
