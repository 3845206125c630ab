"""Faust workers: one way to build the app, to take batches, to retry a batch until it is done."""

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from faust.types import TP
from mode.types.signals import BaseSignalT
from pymongo.errors import PyMongoError
from sqlalchemy.exc import DBAPIError

from kernel import health as process_health
from kernel import metrics
from kernel.group_membership import (
    InstanceIdInUse,
    claim_instance_id,
    group_instance_id,
)
from kernel.kafka import fetch_wakeups, pace_empty_fetches
from kernel.logs import configure_logging
from kernel.settings import KafkaSettings

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    PyMongoError,
    KafkaError,
    DBAPIError,
    StoreOperationalError,  # eventsourcing's wrapper of a failed commit
    StoreInterfaceError,
    OSError,
    TimeoutError,
)
"""Infrastructure failures: the work is retried, never dropped or dead-lettered."""


STALL_EXIT_GRACE = 10.0
"""Seconds a stalled worker's shutdown may take before the process ends regardless."""


class ConsumerStalled(RuntimeError):
    """An assigned partition stays behind while the worker handles nothing."""


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner.

    At the default log level (WARN) Faust spins a spinner on every log record: it sets
    the root logger to DEBUG and adds a handler for it, so every library's debug message
    (aiokafka's, several per fetch) is built and handled. That was about a seventh of
    a saga worker's CPU at 5 orders/s.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        configure_logging(self.app.conf.id, take_root=True)  # JSON lines (kernel.logs)

    async def on_first_start(self) -> None:
        """Claim the app's group instance id on this machine before it joins the group
        (`kernel.group_membership`): a second live process with the same id stops here."""
        conf = self.app.conf
        if conf.consumer_group_instance_id:
            try:
                self.instance_claim = await claim_instance_id(
                    ",".join(str(url) for url in conf.broker),
                    conf.id,
                    conf.consumer_group_instance_id,
                )
            except InstanceIdInUse as error:
                log.critical("%s", error)  # Faust's crash would not say why
                raise
            log.info(
                "consumer group %r: static member %r (session timeout %.0fs)",
                conf.id,
                conf.consumer_group_instance_id,
                conf.broker_session_timeout,
            )
        health = process_health.current()
        health.serve()
        health.start()
        self.end_offsets = EndOffsets(
            ",".join(f"{url.host}:{url.port or 9092}" for url in conf.broker)
        )
        health.add_sampler(
            "consumer lag",
            consumer_lag_sampler(self.app, health, self.end_offsets, on_stall=self._stalled),
        )
        await super().on_first_start()

    async def on_stop(self) -> None:
        end_offsets: EndOffsets | None = getattr(self, "end_offsets", None)
        if end_offsets is not None:
            await end_offsets.stop()
        await super().on_stop()

    def _stalled(self, problem: str) -> None:
        """Exit (code 1) so that the supervisor starts the worker again: a fresh
        consumer fetches the partition from its committed offset (restarted, a static
        member gets its partitions back at once). Faust is asked to crash (it stops its
        services and exits); if that has not ended the process within
        ``STALL_EXIT_GRACE`` seconds (a shutdown can hang on the consumer that stalled),
        it ends at once: nothing handled is lost, what is not acknowledged comes again."""
        log.critical(
            "consumer group %r stalled, exiting to be restarted: %s", self.app.conf.id, problem
        )
        exit_anyway = threading.Timer(STALL_EXIT_GRACE, os._exit, args=(1,))
        exit_anyway.daemon = True
        exit_anyway.start()
        asyncio.ensure_future(self.crash(ConsumerStalled(problem)))


class EndOffsets:
    """The broker's end offsets, read by a consumer of its own (no group: it asks
    ListOffsets and nothing else) in the worker's event loop.

    Not through Faust's consumer: it serves such calls in its own thread, two at a time,
    and one that waits (for a broker away, or a position not set yet) holds its fetches
    up. A health sampler that asked it for positions every check stalled saga workers in
    the chaos rounds."""

    def __init__(self, bootstrap_servers: str):
        self.bootstrap_servers = bootstrap_servers
        self._consumer: AIOKafkaConsumer | None = None
        self._stopped = False

    async def read(
        self, partitions: list[TopicPartition], timeout: float
    ) -> dict[TopicPartition, int] | None:
        """The end offsets of ``partitions``; None if the broker does not answer within
        ``timeout`` seconds, or once stopped."""
        if self._stopped:
            return None
        try:
            async with asyncio.timeout(timeout):
                return await self._read(partitions)
        except (TimeoutError, KafkaError, OSError):
            await self.close()  # connect afresh next time
            return None

    async def _read(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False
            )
            await self._consumer.start()
        return dict(await self._consumer.end_offsets(partitions))

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with suppress(Exception):
                await consumer.stop()

    async def stop(self) -> None:
        """Close for good: a health check still running as the worker stops opens no
        new consumer (left unclosed at exit)."""
        self._stopped = True
        await self.close()


def consumer_lag_sampler(
    app: Any,
    health: process_health.Health,
    end_offsets: EndOffsets,
    on_stall: Callable[[str], object] | None = None,
) -> Any:
    """Per assigned partition, the messages after the last one handled, up to the
    broker's end offset: ``cqrs_consumer_lag_messages``; a problem beyond
    ``HEALTH_MAX_LAG``. A partition that stays behind while the worker handles nothing
    for ``HEALTH_STALL_AFTER`` seconds is stalled (``StallWatch``): the process is not
    live, and ``on_stall`` is called with what is wrong. A partition this process has
    handled nothing of since it was (last) given it is left out: its lag is not known
    without asking the group's coordinator."""
    group = app.conf.id
    seen: set[tuple[str, int]] = set()
    watch = process_health.StallWatch(health.settings.stall_after)

    async def sample() -> str | None:
        if app.consumer is None:
            return None
        partitions = [
            TopicPartition(tp.topic, tp.partition)
            for tp in app.consumer.assignment()
            if not tp.topic.startswith(f"{group}-__")  # Faust's own (its assignor's)
        ]
        handled = _handled_offsets(health, {(tp.topic, tp.partition) for tp in partitions})
        ends = await end_offsets.read(partitions, health.settings.check_timeout / 2)
        if ends is None:
            watch.pause()  # a broker away is not a stall
            return "the broker did not give its end offsets"
        worst = 0
        behind: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in partitions:
            key = (tp.topic, tp.partition)
            end = ends.get(tp)
            if end is None or key not in handled:
                continue
            behind[key] = (handled[key] + 1, end)
            lag = max(0, end - handled[key] - 1)
            worst = max(worst, lag)
            metrics.CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(lag)
        for topic, partition in seen - set(behind):  # given to another worker
            metrics.CONSUMER_LAG.remove(group, topic, str(partition))
        seen.clear()
        seen.update(behind)
        _look_for_stalls(watch, behind, health, on_stall)
        max_lag = health.settings.max_lag
        return f"{worst} messages behind (more than {max_lag})" if worst > max_lag else None

    return sample


def _handled_offsets(
    health: process_health.Health, assigned: set[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The last offset handled per assigned partition (the lowest of the process's
    consumers).

    Kept while a partition is away for a moment (a rebalance may take them all), and a
    partition that stops being fetched then is the stall to see; forgotten once a
    rebalance gives it to another worker (``_forget_partitions_given_away``)."""
    handled: dict[tuple[str, int], int] = {}
    for consumer in health.consumers.values():
        for key, offset in consumer.offsets.items():
            if key in assigned:
                handled[key] = min(offset, handled.get(key, offset))
    return handled


def _look_for_stalls(
    watch: process_health.StallWatch,
    behind: dict[tuple[str, int], tuple[int, int]],
    health: process_health.Health,
    on_stall: Callable[[str], object] | None,
) -> None:
    now = time.monotonic()
    busy = sum(consumer.busy_seconds(now) for consumer in health.consumers.values())
    stalled = watch.observe(behind, busy, now)
    problems = {
        f"partition {topic}[{partition}]": (
            f"stalled: {lag} messages behind the broker's end, nothing handled for {waited:.0f} s"
        )
        for (topic, partition), (lag, waited) in sorted(stalled.items())
    }
    newly = bool(problems) and not health.stalled
    health.stalled = problems
    if newly and on_stall is not None:
        on_stall("; ".join(f"{name}: {problem}" for name, problem in problems.items()))


def faust_app(app_id: str, settings: KafkaSettings, data_dir: str = "var/faust") -> faust.App:
    """A Faust app reading raw bytes (decoding is ours, so bad bytes can be dead-lettered).

    Its consumer is a static member of the group ``app_id``, as copy `WORKER_INSTANCE` of
    the worker (`kernel.group_membership`): restarted after a crash, it gets its partitions
    back at once.

    Where `KAFKA_EMPTY_FETCH_INTERVAL` is set (the local stack), its consumer does not
    spin on a broker that answers empty fetches at once (`pace_empty_fetches`), and is
    woken by the relays' announcements where they are heard (`FetchWakeups`)."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    if settings.kafka_empty_fetch_interval > 0:
        pace_empty_fetches(
            settings.kafka_empty_fetch_interval,
            fetch_wakeups(settings),
            settings.kafka_empty_fetch_interval_with_wakeups,
        )
    app = faust.App(
        app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=group_instance_id(app_id, settings.worker_instance),
        broker_session_timeout=settings.kafka_session_timeout,
        store="memory://",
        web_enabled=False,
        datadir=f"{data_dir}/{{conf.name}}",
        # Stopping does not wait for the batch in hand to be handled (with a server
        # away it would wait for ever): its messages are not acknowledged, so the next
        # worker gets them again, and the inbox or the version guard keeps their
        # effects once.
        stream_wait_empty=False,
        Worker=Worker,
    )
    app.on_partitions_assigned.connect(_forget_partitions_given_away)
    return app


def _forget_partitions_given_away(
    sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
) -> None:
    """What this process handled of a partition now given to another worker says nothing
    of where its run goes on (``Continuity``, the consumer lag)."""
    assigned: set[TP] = args[0]
    kept = {(tp.topic, tp.partition) for tp in assigned}
    for consumer in process_health.current().consumers.values():
        for key in [key for key in consumer.offsets if key not in kept]:
            del consumer.offsets[key]


def _handled(consumer: process_health.Consumer, batch: Sequence[Any]) -> None:
    """The batch's last offset per partition (the batch is in order)."""
    last: dict[tuple[str, int], int] = {}
    for event in batch:
        message = getattr(event, "message", None)
        if message is not None:
            last[(message.topic, message.partition)] = message.offset
    for (topic, partition), offset in last.items():
        consumer.handled(topic, partition, offset)
    if not last:
        consumer.down_since = None


async def retry_until_done(
    work: Callable[[], Awaitable[None]], what: str, stopping: asyncio.Event | None = None
) -> None:
    """Run ``work`` until it succeeds, backing off on infrastructure errors.

    A batch is acknowledged once its handler returns (``handle_batches``), so it must
    be finished (or dead-lettered) before this returns; while a server is away the
    worker waits instead of losing the batch. Anything else is a bug and propagates.
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
    handle: Callable[[Sequence[Any]], Awaitable[None]],
    *,
    name: str = "consumer",
) -> None:
    """Hand ``handle`` whatever has arrived, up to ``size`` events at a time, in order, one
    batch at a time; wait only when nothing has arrived.

    No batch waits to fill: the first event after a quiet spell is handled at once,
    and while a batch is handled the next events gather, so batches grow with the load
    by themselves. The stream is read in a task of its own (Faust's per-message work,
    about 150 µs a message here, overlaps the handling); the batch is handled in the
    caller's task, so an error of ``handle`` is raised at once. Acknowledgement is
    manual (``noack``): an event is acknowledged only once its batch was handled, so
    if the worker stops or dies meanwhile it comes again (at least once). At most
    ``size`` events wait beside the batch being handled.

    The process's health (``kernel.health``) follows the task as the consumer ``name``:
    running while it is in here, down once it has left (with the error that ended it),
    and each batch's last offset per partition (the consumer lag).
    """
    consumer = process_health.current().consumer(name)
    consumer.started()
    ended: BaseException | None = None
    try:
        await _handle_batches(stream, size, handle, consumer)
    except BaseException as error:
        ended = error
        raise
    finally:
        consumer.stopped(ended)


REWIND_EVERY = 1.0
"""Seconds between two rewinds of a partition held back (``Continuity``)."""


class Continuity:
    """Each partition's messages handled as an unbroken run of offsets.

    faust-streaming can lose a message across a rebalance: one fetched in the old
    generation is dropped from the stream (its buffer cleared, or its generation stale)
    while the consumer's read offset has moved past it, so the next one comes instead;
    once that one is acknowledged, the commit passes over the lost one (its
    ``_new_offset`` takes a first acknowledged offset one past the committed one as
    contiguous). The inbox would then record the later position, and the lost message
    would never be handled: in the chaos rounds, after a broker restart, one saga step
    was lost and its order never ended. So a message that comes after a gap is held
    back (neither handled nor acknowledged) and the consumer is sent back to the
    missing offset.

    The run is what this process handled (``Consumer.offsets``); it starts afresh for a
    partition given to another worker. The kernel's topics have no gaps of their own (an
    idempotent producer, no transactions, no compaction). Messages removed by retention
    before they were read would hold their partition back until the stall check
    restarts the worker, which then reads on from the group's committed offset.
    """

    def __init__(
        self,
        consumer: process_health.Consumer,
        rewind: Callable[[str, int, int], Awaitable[bool]],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.consumer = consumer
        self._rewind = rewind
        self._clock = clock
        self.missing: dict[tuple[str, int], int] = {}
        """Per partition held back: the offset it waits for."""
        self._rewound: dict[tuple[str, int], float] = {}

    def split(self, batch: Sequence[Any]) -> list[Any]:
        """The batch's events that go on their partitions' runs. A partition's events
        after a gap are held back (``missing`` says the offset it waits for)."""
        expected = {key: offset + 1 for key, offset in self.consumer.offsets.items()}
        kept: list[Any] = []
        held: set[tuple[str, int]] = set()
        for event in batch:
            message = event.message
            key = (message.topic, message.partition)
            if key in held:
                continue
            wanted = expected.get(key)
            if wanted is not None and message.offset > wanted:
                held.add(key)
                self.missing[key] = wanted
                continue
            expected[key] = message.offset + 1
            kept.append(event)
            if key in self.missing and message.offset >= self.missing[key]:
                del self.missing[key]  # the run goes on past the gap
                self._rewound.pop(key, None)
        return kept

    async def rewind_due(self) -> None:
        """Send the consumer back to each missing offset, again every ``REWIND_EVERY``
        seconds until it comes: the partition's later events, fetched already, come
        first, and Faust may drop what it fetches again while it still hands them on."""
        now = self._clock()
        for (topic, partition), offset in sorted(self.missing.items()):
            last = self._rewound.get((topic, partition))
            if last is not None and now - last < REWIND_EVERY:
                continue
            self._rewound[(topic, partition)] = now
            log.warning(
                "partition %s[%d]: offset %d was not delivered before later ones; "
                "reading the partition again from it",
                topic,
                partition,
                offset,
            )
            if not await self._rewind(topic, partition, offset):
                del self.missing[(topic, partition)]  # not this worker's any more
                del self._rewound[(topic, partition)]


def faust_rewind(app: Any) -> Callable[[str, int, int], Awaitable[bool]]:
    """Seek the Faust app's consumer to an offset of one of its partitions; False if
    it could not (the partition was taken away meanwhile: its next owner reads it)."""

    async def rewind(topic: str, partition: int, offset: int) -> bool:
        try:
            await app.consumer.seek_wait({TP(topic, partition): offset})
        except (KafkaError, TimeoutError) as error:
            log.warning("could not seek %s[%d] to %d: %r", topic, partition, offset, error)
            return False
        return True

    return rewind


async def _handle_batches(
    stream: Any,
    size: int,
    handle: Callable[[Sequence[Any]], Awaitable[None]],
    consumer: process_health.Consumer,
) -> None:
    continuity = Continuity(consumer, faust_rewind(stream.app))
    manual = stream.noack()
    arrived: deque[Any] = deque()
    something = asyncio.Event()  # set when an event arrived, or the reading ended
    room = asyncio.Event()  # cleared while ``size`` events wait
    room.set()

    async def read() -> None:
        try:
            async for event in manual.events():
                arrived.append(event)
                something.set()
                if len(arrived) >= size:
                    room.clear()
                    await room.wait()
        finally:
            something.set()

    reading = asyncio.ensure_future(read())
    try:
        while True:
            if not arrived:
                something.clear()
                if reading.done():
                    reading.result()  # raises what ended the stream, if anything
                    return
                if continuity.missing:  # nothing may come until it is sent back again
                    with suppress(TimeoutError):
                        async with asyncio.timeout(REWIND_EVERY):
                            await something.wait()
                    await continuity.rewind_due()
                else:
                    await something.wait()
                continue
            batch = continuity.split([arrived.popleft() for _ in range(min(size, len(arrived)))])
            room.set()
            if continuity.missing:
                await continuity.rewind_due()
            if not batch:
                continue
            consumer.taken()
            try:
                await handle(batch)
            finally:
                consumer.done()
            for event in batch:
                await manual.ack(event)
            _handled(consumer, batch)
    finally:
        reading.cancel()
        with suppress(asyncio.CancelledError, Exception):  # the error that ends us counts
            await reading
