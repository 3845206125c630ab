"""Feeds a projection from consumed messages, in batches, idempotently.

One batch: decode and validate every message (the unreadable ones go to the
dead-letter topic with their reason; known event types the projection does not use
are skipped), load the batch's documents in one query, apply the events in order in
memory, skipping any event not newer than what the document already holds from the
same source aggregate (the version guard, ``_applied``), write the changed documents
in one bulk write, then record per-partition progress (of the collection written).
The live worker and ``cqrs replay`` run this same code; they differ only in where
the messages come from and which collection they write.

Writes are compare-and-set on a revision number (``_rev``): if another writer got
there first (two workers on one partition during a rebalance), the batch is
reloaded and applied again, which the version guard makes safe. A document found
missing is inserted (a duplicate key means another writer created it: a conflict).

The documents this runner wrote last are kept in memory (``KNOWN_DOCUMENTS`` of them)
and not loaded again: the compare-and-set catches any other writer's change, and a
conflict forgets them all before the batch is reloaded. Nor are the documents of the
aggregates a batch creates looked up (see ``_new_aggregate``). On a MongoDB-compatible
server a batch's ``find`` costs about as much as its bulk write, so this is what
keeps the live projection near the server's raw bulk-write speed (docs/benchmarks.md).
"""

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from contracts.envelope import Envelope
from kernel import metrics, tracing
from kernel.messaging import ConsumedMessage, DeadLetters, EventReader, Reason
from kernel.projection import Document, Projection, ProjectionError
from kernel.projection_catalog import PROGRESS as PROGRESS_COLLECTION
from kernel.projection_catalog import Catalog

log = logging.getLogger(__name__)

_DUPLICATE_KEY = 11000
KNOWN_DOCUMENTS = 20_000
MAX_CONFLICT_RETRIES = 10
DRAIN_POLL_SECONDS = 0.1
DRAIN_WARN_AFTER_SECONDS = 30.0


class WriteConflict(Exception):
    """Another writer changed a document of the batch since it was loaded."""


@dataclass
class Batch:
    """Decoded messages, ready to apply.

    ``readable`` pairs each envelope with its parsed event and the message it came in
    (None when a rebuild reads the event stores); ``messages`` are every Kafka message
    of the batch (progress is recorded for them all, unreadable ones included).
    """

    messages: list[ConsumedMessage] = field(default_factory=list)
    readable: list[tuple[ConsumedMessage | None, Envelope, Any]] = field(default_factory=list)
    rejected: list[tuple[ConsumedMessage | None, Reason]] = field(default_factory=list)


@dataclass(frozen=True)
class BatchResult:
    events: int  # events read (readable and rejected)
    written: int  # documents written
    rejected: int  # events dead-lettered (live) or skipped (rebuild)


def _new_aggregate(key: str, envelope: Envelope) -> bool:
    """Whether the event creates the aggregate whose document it names: its document
    most likely does not exist yet, so the batch does not look it up.

    A guess: if the document exists after all (another topic's event made it first,
    or the event came again), its insert is a duplicate key, which is a conflict, and
    the batch is applied again with every document loaded. Saves a lookup per new
    aggregate, which costs about as much as writing it on a MongoDB-compatible server.
    """
    return envelope.aggregateversion == 1 and envelope.subject == key


class ProjectionRunner:
    """Applies batches to one collection of a projection.

    ``collection=None`` is the live worker: before every batch it resolves the live
    collection through the alias (refusing one built by another version), and after
    the batch it looks again; if a rebuild switched the alias meanwhile, the batch is
    applied to the new collection too (a no-op where the rebuild got there first), so
    no event is lost at a cut-over (ADR 14). It writes nothing to a collection a
    rebuild is still draining into: it waits for the drain. A rebuild names its own collection.
    ``dead_letters=None`` (a rebuild) logs and counts rejected events instead: the
    live worker dead-lettered them already.
    """

    def __init__(
        self,
        projection: Projection,
        database: AsyncDatabase[Any],
        dead_letters: DeadLetters | None,
        *,
        collection: str | None = None,
    ):
        self.projection = projection
        self.database = database
        self.catalog = Catalog(database)
        self.collection = collection
        self.progress = database[PROGRESS_COLLECTION]
        self.dead_letters = dead_letters
        self.reader = EventReader(projection.accepts)
        self._live: str | None = None  # the live target as last read (collection=None)
        # The documents last written, by id, and the collection they are in.
        self._known: OrderedDict[str, Document] = OrderedDict()
        self._known_in: str | None = None

    async def target(self) -> str:
        """The collection the next batch goes to."""
        if self.collection is not None:
            return self.collection
        if self._live is None:
            self._live = await self._writable_live()
        return self._live

    async def _writable_live(self) -> str:
        """The live collection, once no rebuild is draining into it (ADR 14)."""
        started = time.monotonic()
        warned = False
        while (live := await self.catalog.live_for_writing(self.projection)).draining:
            if not warned and time.monotonic() - started > DRAIN_WARN_AFTER_SECONDS:
                log.warning(
                    "projection %s waits for the rebuild draining into %s; if that rebuild "
                    "was stopped, finish it with `cqrs replay %s --resume`",
                    self.projection.name,
                    live.collection,
                    self.projection.name,
                )
                warned = True
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        return live.collection

    async def prepare(self) -> None:
        """Check the target may be written by this version; create its indexes."""
        target = await self.target()
        if self.projection.indexes:
            await self.database[target].create_indexes(self.projection.indexes)

    async def handle(self, messages: list[ConsumedMessage]) -> BatchResult:
        """Project one batch. Raises only for infrastructure errors (retry the batch)
        and when the live collection was built by another version.

        Traced: the batch in a span linked to its messages' traces, and each message this
        projection reads in a span that is the child of its message's context, from the
        batch's start until it is written (``kernel.tracing``)."""
        name = f"projection {self.projection.name}"
        span = tracing.batch_span(
            f"{name} batch",
            (message.headers for message in messages),
            attributes={"messaging.batch.message_count": len(messages)},
        )
        if not span.is_recording():
            return await self.apply(self.decode(messages))
        spans = [
            tracing.message_span(
                f"{name} {message.header('ce_type')}",
                message.headers,
                tracing.message_attributes(
                    message.headers, message.topic, message.partition, message.offset
                ),
            )
            for message in messages
            if not self.reader.skips(message.header("ce_type"))
        ]
        try:
            with tracing.current_span(span):
                return await self.apply(self.decode(messages))
        except BaseException as error:
            for message_span in spans:
                message_span.record_exception(error)
            raise
        finally:
            for message_span in spans:
                message_span.end()

    def decode(self, messages: list[ConsumedMessage]) -> Batch:
        batch = Batch(messages=messages)
        for message in messages:
            envelope = self.reader.envelope(message.value)
            if isinstance(envelope, Reason):
                batch.rejected.append((message, envelope))
            else:
                self.add(batch, envelope, message)
        return batch

    def add(self, batch: Batch, envelope: Envelope, message: ConsumedMessage | None) -> None:
        """Parse one envelope's event into the batch (or reject it, or skip it)."""
        event = self.reader.event(envelope)
        if isinstance(event, Reason):
            batch.rejected.append((message, event))
        elif event is not None:  # None: another read model's concern
            batch.readable.append((message, envelope, event))

    async def apply(self, batch: Batch) -> BatchResult:
        target = await self.target()
        written, rejected_by_apply = await self._apply_retrying(target, batch)
        rejected = batch.rejected + rejected_by_apply
        if rejected:
            await self._reject(rejected)
        if self.collection is not None:
            await self._record_progress(target, batch)
        else:
            # Read the alias again, only once the progress is written: the next batch
            # starts from what this read says. A rebuild's drain reads the old
            # collection's progress after its switch; a batch whose progress landed
            # after that read, while this read still saw the old alias, would be in
            # neither collection (reading both at once lost events that way).
            await self._record_progress(target, batch)
            self._live = None
            switched_to = await self.target()
            if switched_to != target:  # a cut-over happened while the batch was written
                log.info("projection %s switched to %s", self.projection.name, switched_to)
                written, _ = await self._apply_retrying(switched_to, batch)  # rejected above
                await self._record_progress(switched_to, batch)
        metrics.projection_writes(self.projection.name, "written", written)
        metrics.projection_writes(self.projection.name, "rejected", len(rejected))
        return BatchResult(len(batch.readable) + len(batch.rejected), written, len(rejected))

    async def _reject(self, rejected: list[tuple[ConsumedMessage | None, Reason]]) -> None:
        """Live: to the dead-letter topic (which logs and counts them). A rebuild only
        logs them: the live worker dead-lettered them when they first came."""
        if self.dead_letters is not None:
            await self.dead_letters.send([(m, reason) for m, reason in rejected if m is not None])
            return
        for message, reason in rejected:
            where = f"{message.topic}[{message.partition}]@{message.offset}" if message else ""
            log.warning("projection %s skips %s: %s", self.projection.name, where, reason)

    async def _apply_retrying(
        self, target: str, batch: Batch
    ) -> tuple[int, list[tuple[ConsumedMessage | None, Reason]]]:
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                return await self._apply(
                    self.database[target], batch.readable, guess_new=attempt == 0
                )
            except WriteConflict:
                metrics.projection_writes(self.projection.name, "conflict", 1)
                log.debug("projection %s: a write conflict, applying the batch again", target)
                self._known.clear()  # another writer was here (or a guess was wrong)
                continue
        raise TimeoutError(f"projection {self.projection.name}: batch kept conflicting")

    async def _apply(
        self,
        documents: AsyncCollection[Any],
        readable: list[tuple[ConsumedMessage | None, Envelope, Any]],
        *,
        guess_new: bool,
    ) -> tuple[int, list[tuple[ConsumedMessage | None, Reason]]]:
        keyed = [(m, e, ev, self.projection.key(e, ev)) for m, e, ev in readable]
        if self._known_in != documents.name:
            self._known.clear()
            self._known_in = documents.name
        current: dict[str, Document] = {}
        unknown = []
        guessed: set[str] = set()  # taken to have no document yet (see _new_aggregate)
        first: dict[str, Envelope] = {}
        for _, envelope, _, key in keyed:
            first.setdefault(key, envelope)
        for key, envelope in first.items():
            if (known := self._known.get(key)) is not None:
                current[key] = known
            elif guess_new and _new_aggregate(key, envelope):
                guessed.add(key)
            else:
                unknown.append(key)
        if unknown:
            async for document in documents.find({"_id": {"$in": unknown}}):
                current[document["_id"]] = document
        revisions = {key: document.get("_rev") for key, document in current.items()}
        changed: dict[str, Document] = {}
        rejected: list[tuple[ConsumedMessage | None, Reason]] = []
        for message, envelope, event, key in keyed:
            document = current.get(key)
            applied: dict[str, int] = dict(document.get("_applied", {})) if document else {}
            source = f"{envelope.source}/{envelope.subject}"
            if applied.get(source, 0) >= envelope.aggregateversion:
                continue  # duplicate or older: the version guard
            try:
                new = self.projection.apply(document, envelope, event)
            except ProjectionError as error:
                if key in guessed:
                    raise WriteConflict() from error  # the guess may be wrong: load it
                reason = Reason(f"projection failed: {error}", "projection-failed")
                rejected.append((message, reason))
                continue
            applied[source] = envelope.aggregateversion
            new.update(_id=key, _applied=applied)
            current[key] = changed[key] = new
        await self._write(documents, changed, revisions)
        self._remember(changed)
        return len(changed), rejected

    def _remember(self, written: dict[str, Document]) -> None:
        for key, document in written.items():
            self._known[key] = document
            self._known.move_to_end(key)
        while len(self._known) > KNOWN_DOCUMENTS:
            self._known.popitem(last=False)

    async def _write(
        self,
        documents: AsyncCollection[Any],
        changed: dict[str, Document],
        revisions: dict[str, Any],
    ) -> None:
        if not changed:
            return
        operations: list[InsertOne[Document] | ReplaceOne[Document]] = []
        for key, document in changed.items():
            document["_rev"] = (revisions.get(key) or 0) + 1
            if key not in revisions:
                operations.append(InsertOne(document))  # a duplicate key if it exists by now
            else:
                # Matches only the revision we loaded; if it changed, the upsert tries an
                # insert: a duplicate key too.
                revision = revisions[key]
                operations.append(ReplaceOne({"_id": key, "_rev": revision}, document, upsert=True))
        try:
            result = await documents.bulk_write(operations, ordered=False)
        except BulkWriteError as error:
            if error.details.get("writeConcernErrors") or any(
                e["code"] != _DUPLICATE_KEY for e in error.details["writeErrors"]
            ):
                raise
            raise WriteConflict() from error
        if result.inserted_count + result.matched_count + result.upserted_count < len(operations):
            raise WriteConflict()

    async def _record_progress(self, target: str, batch: Batch) -> None:
        """Per (topic, partition) of ``target``: the last offset, and the position and
        time of the last event applied.

        Never backwards (``$max``): during a cut-over the live worker and the rebuild's
        drain both write the new collection's progress, in either order."""
        last: dict[tuple[str, int], dict[str, Any]] = {}
        for message in batch.messages:
            last.setdefault((message.topic, message.partition), {})["offset"] = message.offset
        for origin, envelope, _ in batch.readable:
            if origin is None:
                continue
            entry = last[(origin.topic, origin.partition)]
            entry["position"] = envelope.sequence
            entry["event_time"] = envelope.time
        now = datetime.now(UTC)
        operations = []
        for (topic, partition), entry in last.items():
            fields = {
                "projection": self.projection.name,
                "collection": target,
                "topic": topic,
                "partition": partition,
                "updated_at": now,
            }
            operations.append(
                UpdateOne(
                    {"_id": f"{target}:{topic}:{partition}"},
                    {"$set": fields, "$max": entry},
                    upsert=True,
                )
            )
        if operations:
            await self.progress.bulk_write(operations, ordered=False)
