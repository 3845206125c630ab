"""Rebuild a projection into a new collection while the live one serves, then cut over.

The same :class:`~kernel.projection_runtime.ProjectionRunner` as the live worker applies
the events; a rebuild only differs in where they come from and which collection it
writes. Phases (docs/adr/0014-replay-and-cut-over.md):

1. **Build.** From the event stores (``stores``: every service's log read directly,
   merged by event time, no broker) or from the topics' earliest offsets (``kafka``).
   Reading and decoding the next batch overlaps the bulk write of the current one.
   A store rebuild first notes the topics' end offsets, then each log's last position:
   every event published before those offsets is in the logs up to those positions.
   The checkpoint (log positions, or the collection's per-partition progress) is
   saved after every batch, so ``--resume`` continues where a killed run stopped.
2. **Catch up.** Tail the topics from those offsets (a store rebuild) or from where
   the build stopped, until a pass finds less than a batch left.
3. **Shadow check.** Compare the new collection with the live one document by
   document (``_rev``, a count of writes, excluded); documents that differ are
   compared again after catching up (the live worker may be ahead or behind).
4. **Switch.** One update of the alias; then **drain**: tail until the new collection
   has every offset the live worker applied to the old one before it saw the switch
   (it applies everything after to the new one itself, once the drain is done). The
   version guard makes an event applied twice a no-op. ``--resume`` finishes a drain
   that was stopped.
"""

import asyncio
import heapq
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from eventsourcing.persistence import Notification
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import Envelope
from kernel.messaging import ConsumedMessage
from kernel.projection import Document, Projection
from kernel.projection_catalog import BuildState, Catalog, LiveTarget, build_collection_name
from kernel.projection_runtime import Batch, BatchResult, ProjectionRunner

log = logging.getLogger(__name__)

Source = Literal["stores", "kafka"]
BOOKKEEPING = ("_rev",)
"""Fields left out of the shadow check: ``_rev`` counts writes, which depends on how
events were batched, not on what the document says."""
SHADOW_RECHECKS = 5
PIPELINE_DEPTH = 2  # batches decoded ahead of the one being written


class ReplayError(RuntimeError):
    """A rebuild that cannot start or go on (nothing to resume, a version mismatch...)."""


@dataclass(frozen=True)
class StoreLog:
    """One service's event store, read directly: its notifications and their envelopes."""

    source: str  # the service whose log it is, e.g. "orders"
    read: Callable[[int, int, int], Sequence[Notification]]  # (start, limit, stop)
    last_position: Callable[[], int]
    envelope: Callable[[Notification], Envelope | None]  # None: a private event


@dataclass(frozen=True)
class ReplayOptions:
    source: Source = "stores"
    batch_size: int = 2000
    from_position: int = 0  # apply only events after this position of their own log
    resume: bool = False
    switch: bool = True
    force: bool = False  # switch even if the shadow check finds differences
    poll_timeout: float = 0.5  # seconds a Kafka fetch waits for more


class ReplayListener(Protocol):
    """What a rebuild reports as it goes (the CLI draws a progress bar from it)."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, events: int) -> None: ...


class QuietListener:
    def phase(self, name: str, total: int | None) -> None:
        log.info("%s (%s events)", name, total if total is not None else "?")

    def advance(self, events: int) -> None:
        pass


@dataclass
class ShadowReport:
    compared: int = 0
    only_live: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.only_live or self.only_new or self.different)

    def describe(self, limit: int = 5) -> str:
        if self.equal:
            return f"{self.compared} documents, all equal"
        parts = [
            f"{len(ids)} {what} (e.g. {', '.join(ids[:limit])})"
            for what, ids in (
                ("only in the live collection", self.only_live),
                ("only in the new collection", self.only_new),
                ("different", self.different),
            )
            if ids
        ]
        return f"{self.compared} documents compared: " + "; ".join(parts)


@dataclass
class ReplaySummary:
    projection: str
    collection: str
    source: Source
    events: int = 0
    written: int = 0
    skipped: int = 0
    seconds: float = 0.0
    shadow: ShadowReport | None = None
    switched: bool = False
    previous: str | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _without_bookkeeping(document: Document) -> Document:
    return {k: v for k, v in document.items() if k not in BOOKKEEPING}


async def shadow_check(database: AsyncDatabase[Any], live: str, new: str) -> ShadowReport:
    """Compare two collections document by document, in ``_id`` order."""
    report = ShadowReport()
    live_cursor = database[live].find({}, sort=[("_id", 1)])
    new_cursor = database[new].find({}, sort=[("_id", 1)])
    left = await anext(live_cursor, None)
    right = await anext(new_cursor, None)
    while left is not None or right is not None:
        report.compared += 1
        if right is None or (left is not None and left["_id"] < right["_id"]):
            assert left is not None
            report.only_live.append(str(left["_id"]))
            left = await anext(live_cursor, None)
        elif left is None or right["_id"] < left["_id"]:
            report.only_new.append(str(right["_id"]))
            right = await anext(new_cursor, None)
        else:
            if _without_bookkeeping(left) != _without_bookkeeping(right):
                report.different.append(str(left["_id"]))
            left = await anext(live_cursor, None)
            right = await anext(new_cursor, None)
    return report


class Replay:
    """One rebuild of one projection (``run`` it once)."""

    def __init__(
        self,
        projection: Projection,
        database: AsyncDatabase[Any],
        kafka_bootstrap: str,
        stores: Sequence[StoreLog],
        options: ReplayOptions,
        listener: ReplayListener | None = None,
    ):
        self.projection = projection
        self.database = database
        self.catalog = Catalog(database)
        self.kafka_bootstrap = kafka_bootstrap
        self.stores = {store.source: store for store in stores}
        self.options = options
        self.listener = listener or QuietListener()
        self.consumer: AIOKafkaConsumer | None = None
        self.from_position = options.from_position  # a resumed build keeps its own

    async def run(self) -> ReplaySummary:
        started = time.monotonic()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka_bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        self.consumer = consumer
        try:
            live = await self.catalog.live(self.projection)
            if self.options.resume and live.draining:  # killed after its switch
                summary = await self._finish_drain(live)
                summary.seconds = time.monotonic() - started
                return summary
            build = await self._open_build()
            collection: str = build["_id"]
            self.from_position = int(build.get("from_position", 0))
            summary = ReplaySummary(self.projection.name, collection, build["source"])
            runner = ProjectionRunner(self.projection, self.database, None, collection=collection)
            await runner.prepare()
            if build["state"] == BuildState.BUILDING:
                if build["source"] == "stores":
                    await self._from_stores(runner, build, summary)
                else:
                    await self._tail(runner, summary, await self._end_offsets(), "rebuild")
                await self.catalog.update_build(collection, {"state": BuildState.CATCHING_UP})
            await self._catch_up(runner, summary)
            if self.options.switch:
                await self._cut_over(runner, summary)
            else:
                await self.catalog.update_build(collection, {"state": BuildState.BUILT})
            summary.seconds = time.monotonic() - started
            return summary
        finally:
            await consumer.stop()

    # -- the build record ---------------------------------------------------------

    async def _open_build(self) -> Document:
        if self.options.resume:
            build = await self.catalog.latest_unfinished_build(self.projection)
            if build is None:
                raise ReplayError(
                    f"no unfinished rebuild of {self.projection.name!r} at version "
                    f"{self.projection.version} to resume"
                )
            log.info("resuming %s from its checkpoint", build["_id"])
            return build
        collection = build_collection_name(self.projection, datetime.now(UTC))
        fields: Document = {"source": self.options.source}
        if self.options.from_position:
            fields["from_position"] = self.options.from_position
        if self.options.source == "stores":
            missing = [t for t in self.projection.topics if t not in self.stores]
            if missing:
                raise ReplayError(f"no event store configured for {', '.join(missing)}")
            # Offsets first, then positions: whatever was published before these
            # offsets is in the logs up to these positions (ADR 14).
            ends = await self._end_offsets()
            fields["kafka_start"] = [
                [tp.topic, tp.partition, offset] for tp, offset in ends.items()
            ]
            fields["store_stop"] = {
                t: await asyncio.to_thread(self.stores[t].last_position)
                for t in self.projection.topics
            }
            fields["store_checkpoint"] = {
                t: self.options.from_position for t in self.projection.topics
            }
        await self.catalog.start_build(self.projection, collection, fields)
        build = await self.catalog.build(collection)
        assert build is not None
        return build

    # -- sources --------------------------------------------------------------------

    async def _from_stores(
        self, runner: ProjectionRunner, build: Document, summary: ReplaySummary
    ) -> None:
        checkpoint: dict[str, int] = dict(build["store_checkpoint"])
        stops: dict[str, int] = build["store_stop"]
        self.listener.phase(
            "rebuild from the event stores",
            sum(max(0, stops[s] - checkpoint[s]) for s in stops),
        )
        queue: asyncio.Queue[tuple[Batch, dict[str, int], int] | None] = asyncio.Queue(
            PIPELINE_DEPTH
        )

        async def read() -> None:
            batch, read_count = Batch(), 0
            async for source, position, envelope in self._merged(checkpoint, stops):
                checkpoint[source] = position
                read_count += 1
                if envelope is not None:
                    runner.add(batch, envelope, None)
                if read_count >= self.options.batch_size:
                    await queue.put((batch, dict(checkpoint), read_count))
                    batch, read_count = Batch(), 0
            if read_count:
                await queue.put((batch, dict(checkpoint), read_count))
            await queue.put(None)

        async def write() -> None:
            while (item := await queue.get()) is not None:
                batch, reached, read_count = item
                result = await runner.apply(batch)
                self._count(summary, result)
                await self.catalog.update_build(
                    summary.collection,
                    {"store_checkpoint": reached},
                    {"events": result.events, "documents_written": result.written},
                )
                self.listener.advance(read_count)

        await _together(read(), write())
        # Hand over to Kafka: the topics continue from the offsets noted at the start.
        await self._seed_offsets(summary.collection, build["kafka_start"])

    async def _merged(
        self, checkpoint: dict[str, int], stops: dict[str, int]
    ) -> AsyncIterator[tuple[str, int, Envelope | None]]:
        """Every log's notifications after its checkpoint up to its stop, merged by
        event time (so the events of one saga mostly share a batch)."""
        chunk = self.options.batch_size
        positions = dict(checkpoint)
        buffers: dict[str, list[tuple[int, Envelope | None]]] = {}

        async def refill(source: str) -> bool:
            if positions[source] >= stops[source]:
                return False
            store = self.stores[source]

            def read_chunk() -> list[tuple[int, Envelope | None]]:
                notifications = store.read(positions[source] + 1, chunk, stops[source])
                return [(n.id, store.envelope(n)) for n in notifications]

            items = await asyncio.to_thread(read_chunk)
            if not items:
                positions[source] = stops[source]
                return False
            positions[source] = items[-1][0]
            items.reverse()  # popped from the end
            buffers[source] = items
            return True

        heap: list[tuple[datetime, str]] = []
        for source in stops:
            if await refill(source):
                heap.append((_time_of(buffers[source][-1][1]), source))
        heapq.heapify(heap)
        while heap:
            _, source = heapq.heappop(heap)
            position, envelope = buffers[source].pop()
            yield source, position, envelope
            if buffers[source] or await refill(source):
                heapq.heappush(heap, (_time_of(buffers[source][-1][1]), source))

    async def _end_offsets(self) -> dict[TopicPartition, int]:
        assert self.consumer is not None
        partitions = [
            tp for topic in self.projection.topics for tp in await self._partitions(topic)
        ]
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(partitions)
        return ends

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        assert self.consumer is not None
        found = self.consumer.partitions_for_topic(topic)
        if not found:
            await self.consumer.topics()  # refresh the metadata
            found = self.consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(found)]

    async def _seed_offsets(self, collection: str, kafka_start: list[list[Any]]) -> None:
        """Record the store rebuild's Kafka starting point as the collection's progress."""
        operations = [
            _progress_at(self.projection, collection, topic, partition, offset - 1)
            for topic, partition, offset in kafka_start
            if offset > 0
        ]
        if operations:
            await self.catalog.progress.bulk_write(operations)

    async def _tail(
        self,
        runner: ProjectionRunner,
        summary: ReplaySummary,
        until: dict[TopicPartition, int],
        phase: str,
    ) -> int:
        """Apply the topics from the collection's progress up to ``until`` (next offsets)."""
        assert self.consumer is not None
        consumer = self.consumer
        done = await self.catalog.offsets(summary.collection)
        start = {tp: done.get((tp.topic, tp.partition), -1) + 1 for tp in until}
        remaining = {tp: end for tp, end in until.items() if start[tp] < end}
        if not remaining:
            return 0
        self.listener.phase(phase, sum(end - start[tp] for tp, end in remaining.items()))
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, start[tp])
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(PIPELINE_DEPTH)
        applied = 0

        async def read() -> None:
            messages: list[ConsumedMessage] = []
            while remaining:
                fetched = await consumer.getmany(
                    *remaining,
                    timeout_ms=int(self.options.poll_timeout * 1000),
                    max_records=self.options.batch_size,
                )
                for tp, records in fetched.items():
                    for record in records:
                        if tp in remaining:
                            messages.append(ConsumedMessage.of_record(record))
                    if tp in remaining and await consumer.position(tp) >= remaining[tp]:
                        del remaining[tp]
                if len(messages) >= self.options.batch_size or (messages and not remaining):
                    await queue.put(self._decoded(runner, messages))
                    messages = []
            await queue.put(None)

        async def write() -> None:
            nonlocal applied
            while (batch := await queue.get()) is not None:
                result = await runner.apply(batch)
                self._count(summary, result)
                applied += len(batch.messages)
                await self.catalog.update_build(
                    summary.collection,
                    {},
                    {"events": result.events, "documents_written": result.written},
                )
                self.listener.advance(len(batch.messages))

        await _together(read(), write())
        return applied

    def _decoded(self, runner: ProjectionRunner, messages: list[ConsumedMessage]) -> Batch:
        batch = runner.decode(messages)
        if self.from_position:
            batch.readable = [
                item for item in batch.readable if item[1].sequence > self.from_position
            ]
        return batch

    # -- catching up and cutting over ---------------------------------------------------

    async def _catch_up(self, runner: ProjectionRunner, summary: ReplaySummary) -> None:
        while await self._tail(runner, summary, await self._end_offsets(), "catch up") >= (
            self.options.batch_size
        ):
            pass

    async def _cut_over(self, runner: ProjectionRunner, summary: ReplaySummary) -> None:
        live = await self.catalog.live(self.projection)
        summary.previous = live.collection
        report = await self._shadow_check(runner, summary, live)
        summary.shadow = report
        await self.catalog.update_build(summary.collection, {"shadow": report.describe()})
        if not report.equal and not self.options.force:
            await self.catalog.update_build(summary.collection, {"state": BuildState.BUILT})
            return
        await self.catalog.switch(self.projection, live, summary.collection)
        summary.switched = True
        await self._drain(runner, summary, live.collection)

    async def _drain(self, runner: ProjectionRunner, summary: ReplaySummary, old: str) -> None:
        """What the live worker applied to the old collection before it saw the switch
        must be in the new one too; it applies everything later itself, once the alias
        says the drain is done (it waits until then: were it to apply a later event of
        an aggregate first, the version guard would skip the drained earlier one)."""
        applied_to_old = await self.catalog.offsets(old)
        until = {
            TopicPartition(topic, partition): offset + 1
            for (topic, partition), offset in applied_to_old.items()
            if topic in self.projection.topics
        }
        await self._tail(runner, summary, until, "drain")
        await self.catalog.drained(self.projection, summary.collection)

    async def _finish_drain(self, live: LiveTarget) -> ReplaySummary:
        """``--resume`` of a rebuild stopped between its switch and the end of its drain
        (the live worker waits for it)."""
        log.info("finishing the drain into %s", live.collection)
        build = await self.catalog.build(live.collection) or {}
        self.from_position = int(build.get("from_position", 0))
        summary = ReplaySummary(
            self.projection.name, live.collection, build.get("source", self.options.source)
        )
        summary.switched = True
        summary.previous = await self.catalog.previous(self.projection)
        runner = ProjectionRunner(self.projection, self.database, None, collection=live.collection)
        if summary.previous is not None:
            await self._drain(runner, summary, summary.previous)
        else:
            await self.catalog.drained(self.projection, live.collection)
        return summary

    async def _shadow_check(
        self, runner: ProjectionRunner, summary: ReplaySummary, live: LiveTarget
    ) -> ShadowReport:
        """Compare the two collections. The live worker keeps writing, so a document may
        differ only because one side has applied an event the other has not yet: each
        differing document is read again after catching up, up to ``SHADOW_RECHECKS``
        times; those still different after that are the differences."""
        report = await shadow_check(self.database, live.collection, summary.collection)
        pending = set(report.only_live + report.only_new + report.different)
        for _ in range(SHADOW_RECHECKS):
            if not pending or live.version != self.projection.version:
                break
            await asyncio.sleep(self.options.poll_timeout)
            await self._tail(runner, summary, await self._end_offsets(), "catch up")
            pending = await self._still_different(live.collection, summary.collection, pending)
        for ids in (report.only_live, report.only_new, report.different):
            ids[:] = [i for i in ids if i in pending]
        return report

    async def _still_different(self, live: str, new: str, ids: set[str]) -> set[str]:
        query = {"_id": {"$in": list(ids)}}
        left = {d["_id"]: d async for d in self.database[live].find(query)}
        right = {d["_id"]: d async for d in self.database[new].find(query)}
        return {
            i
            for i in ids
            if _without_bookkeeping(left.get(i, {})) != _without_bookkeeping(right.get(i, {}))
        }

    def _count(self, summary: ReplaySummary, result: BatchResult) -> None:
        summary.events += result.events
        summary.written += result.written
        summary.skipped += result.rejected


def _time_of(envelope: Envelope | None) -> datetime:
    return envelope.time if envelope is not None else datetime.min.replace(tzinfo=UTC)


def _progress_at(
    projection: Projection, collection: str, topic: str, partition: int, offset: int
) -> UpdateOne:
    return UpdateOne(
        {"_id": f"{collection}:{topic}:{partition}"},
        {
            "$set": {
                "projection": projection.name,
                "collection": collection,
                "topic": topic,
                "partition": partition,
                "updated_at": datetime.now(UTC),
            },
            "$max": {"offset": offset},
        },
        upsert=True,
    )


async def _together(*work: Any) -> None:
    """Run coroutines concurrently; if one fails, cancel the others and raise."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
