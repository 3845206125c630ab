"""Small helpers around aiokafka shared by relays, workers and tests."""

import asyncio
import contextlib
import logging
import re
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import TopicAlreadyExistsError

from kernel.settings import KafkaSettings

log = logging.getLogger(__name__)

EMPTY_FETCH_INTERVAL = 0.01
"""Seconds between the starts of two fetches to one broker when the first brought nothing.

Kafka holds a fetch with nothing to return for ``fetch.max.wait.ms`` (long polling), so
there this never waits. The local broker (noida-db) answers at once, and aiokafka then
asks again at once: thousands of fetches a second, about a core per idle consumer, taken
from the worker's own thread and from the servers beside it (ADR 19).

Setting: ``KAFKA_EMPTY_FETCH_INTERVAL``; while a consumer hears ``FetchWakeups``,
``KAFKA_EMPTY_FETCH_INTERVAL_WITH_WAKEUPS`` instead (ADR 22)."""


class TopicMismatch(RuntimeError):
    """A topic exists with another partition count than the one asked for."""


async def ensure_topics(bootstrap: str, topics: dict[str, int], timeout: float = 30.0) -> None:
    """Create the topics (name → partitions) that do not exist yet.

    An existing topic is left as it is, but a different partition count is an error:
    Faust and the per-key ordering both rely on the count the system was told.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
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
        async with asyncio.timeout(timeout):
            await producer.stop()
    except TimeoutError:
        log.warning("producer stopped with unacknowledged messages; they will be resent")
        # stop() gave up while flushing: its sender would go on retrying (every 100 ms,
        # for as long as the event loop runs) and its connections stay open. aiokafka
        # has no public call for that; these are what stop() itself ends with.
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            await sender.close()
        await producer.client.close()


class FetchWakeups:
    """Tell the consumers on this machine that a topic has new messages, at once.

    Kafka holds an empty fetch until a message arrives (long polling), so a consumer
    learns of a new message without asking again. The local broker answers at once, so
    a consumer asks again after a pause (``pace_empty_fetches``): the shorter the pause,
    the more an idle consumer costs. With wakeups, the producer (the relay, once a batch
    is acknowledged) touches ``<directory>/<topic>``, and every paced consumer of this
    process watching the directory (inotify) ends its pause at once; the pause itself can
    then be long (it is only the fallback for producers that do not announce).

    ``directory`` is per broker (``fetch_wakeups``); None turns wakeups off. Linux only:
    elsewhere, or without an inotify instance to spare, consumers pause as without.
    Nothing depends on a wakeup for correctness: a lost one delays a message to the end
    of the pause. See docs/adr/0022-an-idle-stack-sleeps.md.
    """

    def __init__(self, directory: Path | None):
        self.directory = directory
        if directory is not None:
            with contextlib.suppress(OSError):
                directory.mkdir(parents=True, exist_ok=True)

    def announce(self, topic: str) -> None:
        """Topic ``topic`` has new messages (never raises: a lost wakeup only delays)."""
        if self.directory is None:
            return
        try:
            (self.directory / topic).touch()
        except OSError as error:
            log.debug("could not announce %s in %s: %r", topic, self.directory, error)


def fetch_wakeups(settings: KafkaSettings) -> FetchWakeups:
    """``KAFKA_FETCH_WAKEUP_DIR``'s wakeups for this broker: a folder per bootstrap
    address, so stacks on other brokers of the machine do not wake each other."""
    if not settings.kafka_fetch_wakeup_dir:
        return FetchWakeups(None)
    broker = re.sub(r"[^A-Za-z0-9._-]", "_", settings.kafka_bootstrap_servers)
    return FetchWakeups(Path(settings.kafka_fetch_wakeup_dir).resolve() / broker)


class _Waker:
    """One event loop's watch on a wakeup folder: ``generation`` counts announcements."""

    def __init__(self, directory: Path, loop: asyncio.AbstractEventLoop):
        from inotify_simple import INotify, flags  # Linux only: ImportError elsewhere

        self.directory = directory
        self.loop = loop
        self.generation = 0
        self._next: asyncio.Future[None] = loop.create_future()
        directory.mkdir(parents=True, exist_ok=True)
        self.inotify = INotify(nonblocking=True)
        try:
            self.inotify.add_watch(
                directory, flags.ATTRIB | flags.CREATE | flags.MODIFY | flags.MOVED_TO
            )
            loop.add_reader(self.inotify.fileno(), self._readable)
        except BaseException:
            self.inotify.close()
            raise

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self.inotify.fileno())
        self.inotify.close()

    def _readable(self) -> None:
        if not self.inotify.read(timeout=0):
            return
        self.generation += 1
        self._next.set_result(None)
        self._next = self.loop.create_future()

    async def wait(self, generation: int, timeout: float) -> None:
        """Until an announcement newer than ``generation``, or ``timeout`` seconds."""
        if self.generation != generation:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._next)


@dataclass(frozen=True)
class _Pacing:
    interval: float
    wakeups: FetchWakeups
    interval_with_wakeups: float


_pacing = _Pacing(EMPTY_FETCH_INTERVAL, FetchWakeups(None), EMPTY_FETCH_INTERVAL)
_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Path, _Waker | None]] = (
    weakref.WeakKeyDictionary()
)


def _waker(loop: asyncio.AbstractEventLoop) -> _Waker | None:
    """This loop's watch on the wakeup folder; None without wakeups or inotify."""
    directory = _pacing.wakeups.directory
    if directory is None:
        return None
    if loop in _wakers:
        watched, known = _wakers[loop]
        if watched == directory:
            return known
        if known is not None:  # pacing was set up again, for another folder
            known.close()
    waker: _Waker | None = None
    try:
        waker = _Waker(directory, loop)
    except (ImportError, OSError, AttributeError) as error:
        log.warning(
            "no fetch wakeups from %s (%r): pausing %g s after an empty fetch",
            directory,
            error,
            _pacing.interval,
        )
    else:
        log.info(
            "consumers pause %g s after an empty fetch, or until woken by %s",
            _pacing.interval_with_wakeups,
            directory,
        )
    _wakers[loop] = (directory, waker)
    return waker


def pace_empty_fetches(
    interval: float = EMPTY_FETCH_INTERVAL,
    wakeups: FetchWakeups | None = None,
    interval_with_wakeups: float = 1.0,
) -> None:
    """Make every aiokafka consumer of this process wait out ``interval`` after a fetch
    that brought no records, counted from when that fetch was sent; with ``wakeups``
    that it can watch, ``interval_with_wakeups`` instead, or until a producer announces
    a new message, whichever comes first. The last call's values hold.

    aiokafka (pinned) sends the next fetch to a broker as soon as the last one returns;
    this wraps its fetch task so an empty answer that came back sooner than the interval
    is held until then. A fetch that brought records returns at once, as before. An
    announcement made while a fetch is on its way ends the pause that follows it at once
    (the fetch may have been answered before the message arrived).
    """
    global _pacing
    _pacing = _Pacing(interval, wakeups or FetchWakeups(None), interval_with_wakeups)
    fetch = Fetcher._proc_fetch_request
    if getattr(fetch, "paced", False):
        return

    async def paced_fetch(self: Fetcher, *args: Any) -> bool:
        waker = _waker(asyncio.get_running_loop())
        generation = waker.generation if waker is not None else 0
        sent = time.monotonic()
        fetched: bool = await fetch(self, *args)
        if fetched:
            return fetched
        pause = _pacing.interval if waker is None else _pacing.interval_with_wakeups
        if (left := pause - (time.monotonic() - sent)) > 0:
            try:
                if waker is None:
                    await asyncio.sleep(left)
                else:
                    await waker.wait(generation, left)
            except asyncio.CancelledError:
                # As aiokafka's own fetch task does: cancelled by `close()` or by losing the
                # assignment, and both await it expecting it to end quietly.
                return False
        return fetched

    paced_fetch.paced = True  # type: ignore[attr-defined]
    Fetcher._proc_fetch_request = paced_fetch
