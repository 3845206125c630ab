"""Small helpers around aiokafka shared by relays, workers and tests."""

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

EMPTY_FETCH_INTERVAL = 0.01
"""Seconds between the starts of two fetches to one broker when the first brought nothing.

Kafka holds a fetch with nothing to return for ``fetch.max.wait.ms`` (long polling), so
there this never waits. The local broker (noida-db) answers at once, and aiokafka then
asks again at once: thousands of fetches a second, about a core per idle consumer, taken
from the worker's own thread and from the servers beside it (ADR 19)."""


class TopicMismatch(RuntimeError):
    """A topic exists with another partition count than the one asked for."""


async def ensure_topics(bootstrap: str, topics: dict[str, int], timeout: float = 30.0) -> None:
    """Create the topics (name → partitions) that do not exist yet.

    An existing topic is left as it is, but a different partition count is an error:
    Faust and the per-key ordering both rely on the count the system was told.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=1)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created by another process in the meantime
        present = [name for name in topics if name in existing]
        for info in await admin.describe_topics(present) if present else []:
            count, wanted = len(info["partitions"]), topics[info["topic"]]
            if count != wanted:
                raise TopicMismatch(
                    f"topic {info['topic']!r} exists with {count} partitions, not {wanted}: "
                    f"delete the broker's data (e.g. var/kafka) or set KAFKA_TOPIC_PARTITIONS={count}"
                )
    finally:
        await admin.close()


def reliable_producer(
    bootstrap: str, *, linger_ms: int = 5, max_batch_size: int = 16384
) -> AIOKafkaProducer:
    """Idempotent producer that waits for all in-sync replicas: no loss, no broker-side dupes.

    aiokafka keeps one request in flight per broker and retries a failed one before
    sending anything later, so messages of one partition keep the order they were sent in.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
    )


async def stop_producer(producer: AIOKafkaProducer, timeout: float = 5.0) -> None:
    """Stop a producer, giving up on unsent messages after ``timeout`` seconds.

    With the broker away, aiokafka would wait for ever. Unsent messages were never
    acknowledged, so whoever sent them has not recorded them as published.
    """
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except TimeoutError:
        log.warning("producer stopped with unacknowledged messages; they will be resent")
        # stop() gave up while flushing: its sender would go on retrying (every 100 ms,
        # for as long as the event loop runs) and its connections stay open. aiokafka
        # has no public call for that; these are what stop() itself ends with.
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            await sender.close()
        await producer.client.close()


def pace_empty_fetches(interval: float = EMPTY_FETCH_INTERVAL) -> None:
    """Make every aiokafka consumer of this process wait out ``interval`` after a fetch
    that brought no records, counted from when that fetch was sent (idempotent).

    aiokafka (pinned) sends the next fetch to a broker as soon as the last one returns;
    this wraps its fetch task so an empty answer that came back sooner than ``interval``
    is held until then. A fetch that brought records returns at once, as before.
    """
    fetch = Fetcher._proc_fetch_request
    if getattr(fetch, "paced", False):
        return

    async def paced_fetch(self: Fetcher, *args: Any) -> bool:
        sent = time.monotonic()
        fetched: bool = await fetch(self, *args)
        if not fetched and (left := interval - (time.monotonic() - sent)) > 0:
            try:
                await asyncio.sleep(left)
            except asyncio.CancelledError:
                # As aiokafka's own fetch task does: cancelled by `close()` or by losing the
                # assignment, and both await it expecting it to end quietly.
                return False
        return fetched

    paced_fetch.paced = True  # type: ignore[attr-defined]
    Fetcher._proc_fetch_request = paced_fetch
