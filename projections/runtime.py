"""Feeds a projection from consumed messages, in batches, idempotently.

One batch: decode and validate every message (the unreadable ones go to the
dead-letter topic with their reason; known event types the projection does not use
are skipped), load the batch's documents in one query, apply the events in order in
memory, skipping any event not newer than what the document already holds from the
same source aggregate (the version guard, ``_applied``), write the changed documents
in one bulk write, then record per-partition progress.

Writes are compare-and-set on a revision number (``_rev``): if another writer got
there first (two workers on one partition during a rebalance), the batch is
reloaded and applied again, which the version guard makes safe.
"""

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo import ReplaceOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from contracts.envelope import Envelope
from contracts.registry import ContractError, decode_envelope, is_known_type, parse_data
from projections.projection import Document, Projection, ProjectionError
from write_side.kernel.messaging import ConsumedMessage, DeadLetters

log = logging.getLogger(__name__)

PROGRESS_COLLECTION = "projection_progress"
_DUPLICATE_KEY = 11000
MAX_CONFLICT_RETRIES = 10


class WriteConflict(Exception):
    """Another writer changed a document of the batch since it was loaded."""


class ProjectionRunner:
    def __init__(
        self, projection: Projection, database: AsyncDatabase[Any], dead_letters: DeadLetters
    ):
        self.projection = projection
        self.database = database
        self.documents = database[projection.collection]
        self.progress = database[PROGRESS_COLLECTION]
        self.dead_letters = dead_letters
        self.handled_types = {model.type() for model in projection.accepts}

    async def prepare(self) -> None:
        if self.projection.indexes:
            await self.documents.create_indexes(self.projection.indexes)

    async def handle(self, messages: list[ConsumedMessage]) -> None:
        """Project one batch. Raises only for infrastructure errors (retry the batch)."""
        rejected: list[tuple[ConsumedMessage, str]] = []
        readable: list[tuple[ConsumedMessage, Envelope, Any]] = []
        for message in messages:
            try:
                envelope = decode_envelope(message.value)
                if envelope.type not in self.handled_types and is_known_type(envelope.type):
                    continue  # another service's concern, not this read model's
                event = parse_data(envelope, self.projection.accepts)
            except ContractError as error:
                rejected.append((message, str(error)))
            else:
                readable.append((message, envelope, event))

        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                rejected_by_apply = await self._apply(readable)
                break
            except WriteConflict:
                continue
        else:
            raise TimeoutError(f"projection {self.projection.name}: batch kept conflicting")

        rejected += rejected_by_apply
        if rejected:
            for message, reason in rejected:
                log.warning(
                    "dead-lettering %s[%d]@%d: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    reason,
                )
            await self.dead_letters.send(rejected)
        await self._record_progress(messages, readable)

    async def _apply(
        self, readable: list[tuple[ConsumedMessage, Envelope, Any]]
    ) -> list[tuple[ConsumedMessage, str]]:
        keyed = [(m, e, ev, self.projection.key(e, ev)) for m, e, ev in readable]
        ids = list({key for *_, key in keyed})
        current: dict[str, Document] = {}
        if ids:
            async for document in self.documents.find({"_id": {"$in": ids}}):
                current[document["_id"]] = document
        revisions = {key: document.get("_rev") for key, document in current.items()}
        changed: dict[str, Document] = {}
        rejected = []
        for message, envelope, event, key in keyed:
            document = current.get(key)
            applied: dict[str, int] = dict(document.get("_applied", {})) if document else {}
            source = f"{envelope.source}/{envelope.subject}"
            if applied.get(source, 0) >= envelope.aggregateversion:
                continue  # duplicate or older: the version guard
            try:
                new = self.projection.apply(document, envelope, event)
            except ProjectionError as error:
                rejected.append((message, str(error)))
                continue
            applied[source] = envelope.aggregateversion
            new.update(_id=key, _applied=applied)
            current[key] = changed[key] = new
        await self._write(changed, revisions)
        return rejected

    async def _write(self, changed: dict[str, Document], revisions: dict[str, Any]) -> None:
        if not changed:
            return
        operations: list[ReplaceOne[Document] | UpdateOne] = []
        created = 0
        for key, document in changed.items():
            revision = revisions.get(key)
            document["_rev"] = (revision or 0) + 1
            if revision is None:
                # A document the batch found missing: insert it unless it exists by now.
                # The filter names `_id` alone, which every server resolves as a point
                # lookup, where `{_id, _rev: None}` may cost some a collection scan.
                fields = {name: value for name, value in document.items() if name != "_id"}
                operations.append(UpdateOne({"_id": key}, {"$setOnInsert": fields}, upsert=True))
                created += 1
            else:
                # Matches only the revision we loaded.
                operations.append(ReplaceOne({"_id": key, "_rev": revision}, document, upsert=True))
        try:
            result = await self.documents.bulk_write(operations, ordered=False)
        except BulkWriteError as error:
            if error.details.get("writeConcernErrors") or any(
                e["code"] != _DUPLICATE_KEY for e in error.details["writeErrors"]
            ):
                raise
            raise WriteConflict() from error
        # A missing document another writer created meanwhile is matched, not upserted;
        # a changed revision makes its replacement try an insert: a duplicate key above.
        if result.upserted_count < created or result.matched_count < len(operations) - created:
            raise WriteConflict()

    async def _record_progress(
        self,
        messages: list[ConsumedMessage],
        readable: list[tuple[ConsumedMessage, Envelope, Any]],
    ) -> None:
        last: dict[tuple[str, int], dict[str, Any]] = {}
        for message in messages:
            last.setdefault((message.topic, message.partition), {})["offset"] = message.offset
        for message, envelope, _ in readable:
            entry = last[(message.topic, message.partition)]
            entry["position"] = envelope.sequence
            entry["event_time"] = envelope.time
        now = datetime.now(UTC)
        operations = []
        for (topic, partition), entry in last.items():
            fields = {
                "projection": self.projection.name,
                "topic": topic,
                "partition": partition,
                "updated_at": now,
                **entry,
            }
            operations.append(
                UpdateOne(
                    {"_id": f"{self.projection.name}:{topic}:{partition}"},
                    {"$set": fields},
                    upsert=True,
                )
            )
        await self.progress.bulk_write(operations, ordered=False)
