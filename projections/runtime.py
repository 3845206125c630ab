"""Feeds a projection from consumed messages, in batches, idempotently.

One batch: decode and validate every message (the unreadable ones go to the
dead-letter topic with their reason), load the batch's documents in one query, apply
the events in order in memory, skipping any event not newer than the document (the
version guard: a re-delivered or older event changes nothing), write the changed
documents in one bulk write, then record per-partition progress.

A guarded replace only matches a stored document older than the new one; a duplicate
key error on its upsert means a newer document is already there, which is fine.
"""

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo import ReplaceOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from contracts.registry import ContractError, decode_envelope, parse_data
from projections.projection import Document, Projection, ProjectionError
from write_side.kernel.messaging import ConsumedMessage, DeadLetters

log = logging.getLogger(__name__)

PROGRESS_COLLECTION = "projection_progress"
_DUPLICATE_KEY = 11000


class ProjectionRunner:
    def __init__(
        self, projection: Projection, database: AsyncDatabase[Any], dead_letters: DeadLetters
    ):
        self.projection = projection
        self.database = database
        self.documents = database[projection.collection]
        self.progress = database[PROGRESS_COLLECTION]
        self.dead_letters = dead_letters

    async def prepare(self) -> None:
        if self.projection.indexes:
            await self.documents.create_indexes(self.projection.indexes)

    async def handle(self, messages: list[ConsumedMessage]) -> None:
        """Project one batch. Raises only for infrastructure errors (retry the batch)."""
        rejected: list[tuple[ConsumedMessage, str]] = []
        readable = []
        for message in messages:
            try:
                envelope = decode_envelope(message.value)
                event = parse_data(envelope, self.projection.accepts)
            except ContractError as error:
                rejected.append((message, str(error)))
            else:
                readable.append((message, envelope, event))

        ids = list({envelope.subject for _, envelope, _ in readable})
        current: dict[str, Document] = {}
        if ids:
            async for document in self.documents.find({"_id": {"$in": ids}}):
                current[document["_id"]] = document
        changed: dict[str, Document] = {}
        for message, envelope, event in readable:
            document = current.get(envelope.subject)
            if document is not None and envelope.aggregateversion <= document["version"]:
                continue  # duplicate or older: the version guard
            try:
                new = self.projection.apply(document, envelope, event)
            except ProjectionError as error:
                rejected.append((message, str(error)))
                continue
            new.update(
                version=envelope.aggregateversion,
                position=envelope.sequence,
                updated_at=envelope.time,
            )
            current[envelope.subject] = changed[envelope.subject] = new

        await self._write(changed)
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

    async def _write(self, changed: dict[str, Document]) -> None:
        if not changed:
            return
        operations = [
            ReplaceOne({"_id": _id, "version": {"$lt": doc["version"]}}, doc, upsert=True)
            for _id, doc in changed.items()
        ]
        try:
            await self.documents.bulk_write(operations, ordered=False)
        except BulkWriteError as error:
            others = [e for e in error.details["writeErrors"] if e["code"] != _DUPLICATE_KEY]
            if others or error.details.get("writeConcernErrors"):
                raise

    async def _record_progress(self, messages: list[ConsumedMessage], readable: list[Any]) -> None:
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
