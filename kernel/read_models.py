"""Reading read models: the live collection behind each alias, and how stale it is.

The projections (``kernel/projection_runtime.py``) write the documents and their
progress; the query API's routes read them through these.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

log = logging.getLogger(__name__)

Document = dict[str, Any]

PROGRESS = "projection_progress"
ALIASES = "projection_aliases"
ALIAS_CACHE_SECONDS = 1.0


async def ensure_indexes(collection: AsyncCollection[Document], indexes: list[IndexModel]) -> None:
    """Create each index (a no-op when it exists).

    One the server refuses (e.g. the same keys under another name) is logged and
    skipped: the queries work without it. Any other error (the store is unreachable)
    is raised.
    """
    for index in indexes:
        try:
            await collection.create_indexes([index])
        except OperationFailure as error:
            log.warning(
                "could not create index %s on %s: %s", index.document["key"], collection.name, error
            )


class LiveCollections:
    """The collection that serves each read model, through ``projection_aliases``.

    ``cqrs replay`` builds a new collection beside the live one and switches the alias
    only once it is complete (ADR 13), so whatever the alias names is whole. A read
    model without an alias (a deployment from before them) is its plain collection.
    Looked up at most once a second per read model: after a switch, answers may come
    from the previous (complete, no longer updated) collection for that long.
    """

    def __init__(self, database: AsyncDatabase[Document], ttl: float = ALIAS_CACHE_SECONDS):
        self._database = database
        self._aliases = database[ALIASES]
        self._ttl = ttl
        self._cache: dict[str, tuple[float, str]] = {}

    async def name(self, read_model: str) -> str:
        now = asyncio.get_running_loop().time()
        cached = self._cache.get(read_model)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        alias = await self._aliases.find_one({"_id": read_model}, {"collection": 1})
        name = read_model if alias is None else str(alias["collection"])
        self._cache[read_model] = (now, name)
        return name

    async def get(self, read_model: str) -> AsyncCollection[Document]:
        return self._database[await self.name(read_model)]


@dataclass(frozen=True)
class Staleness:
    """How far a projection has got, from its progress documents."""

    position: int  # highest log position applied in any partition; 0 if none
    event_time: datetime | None  # time of the newest applied event; None if none

    def headers(self, now: datetime) -> dict[str, str]:
        headers = {"X-Read-Model-Position": str(self.position)}
        if self.event_time is not None:
            # Clamped at zero: the writer's and reader's clocks may disagree a little.
            age = max(0.0, (now - self.event_time).total_seconds())
            headers["X-Read-Model-Event-Time"] = self.event_time.isoformat()
            headers["X-Read-Model-Age"] = f"{age:.3f}"
        return headers


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
