"""Which collection serves each projection, and the builds made by ``cqrs replay``.

``projection_aliases`` holds one document per projection: the live collection the
query API reads and the live worker writes, and the projection version that built it.
A rebuild writes a new collection (``<name>_v<version>_<build>``) and, once it has
caught up and passed its shadow check, switches the alias in one single-document
update. ``projection_builds`` records each rebuild: its state, source, checkpoint and
counts (what ``cqrs projections status`` and ``GET /projections`` show).

A deployment from before the aliases has no alias document: its plain collection
(``Projection.collection``) becomes the alias target, recorded as built by version 1
if it already holds documents (the logic before versioning), else by the current
version. See docs/adr/0013-versioned-projection-collections-behind-an-alias.md.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from kernel.projection import Projection

ALIASES = "projection_aliases"
BUILDS = "projection_builds"
PROGRESS = "projection_progress"
INITIAL_VERSION = 1
"""The version of a collection built before projections had versions."""

Document = dict[str, Any]


class ProjectionVersionMismatch(RuntimeError):
    """The live collection was built by another version of the projection's code."""

    def __init__(self, projection: Projection, live: "LiveTarget"):
        super().__init__(
            f"projection {projection.name!r} is at version {projection.version}, but its live "
            f"collection {live.collection!r} was built by version {live.version}: refusing to "
            f"mix the two. Run `cqrs replay {projection.name}` to build and switch to a "
            f"version {projection.version} collection."
        )


class AliasChanged(RuntimeError):
    """The alias was switched by someone else since it was read."""


@dataclass(frozen=True)
class LiveTarget:
    collection: str
    version: int
    draining: bool = False
    """Switched to by a rebuild that is still applying what the live worker wrote to the
    previous collection just before the switch (``Replay``'s drain). The live worker
    waits for it before writing here: the version guard skips an event older than one
    already applied, so the drained events must come first."""


class BuildState:
    BUILDING = "building"  # writing the new collection from its source
    CATCHING_UP = "catching-up"  # tailing the topics up to the live stream
    BUILT = "built"  # complete, not switched (--no-switch, or the shadow check failed)
    LIVE = "live"  # the alias points to it
    RETIRED = "retired"  # was live; kept until `cqrs projections drop`

    IN_PROGRESS = (BUILDING, CATCHING_UP)


def build_collection_name(projection: Projection, now: datetime) -> str:
    """``orders_v2_20260101T120000_3f9a1c``: the version, then when the build started."""
    return f"{projection.name}_v{projection.version}_{now:%Y%m%dT%H%M%S}_{uuid4().hex[:6]}"


class Catalog:
    """The aliases and builds of the projections in one MongoDB database."""

    def __init__(self, database: AsyncDatabase[Any]):
        self.database = database
        self.aliases = database[ALIASES]
        self.builds = database[BUILDS]
        self.progress = database[PROGRESS]

    async def live(self, projection: Projection) -> LiveTarget:
        """The live collection and the version that built it (claiming the plain
        collection the first time, see the module's docstring)."""
        found = await self.aliases.find_one({"_id": projection.name})
        if found is None:
            plain = self.database[projection.collection]
            existing = await plain.find_one({}, projection={"_id": 1})
            version = INITIAL_VERSION if existing is not None else projection.version
            now = datetime.now(UTC)
            document: Document = {
                "_id": projection.name,
                "collection": projection.collection,
                "version": version,
                "switched_at": now,
            }
            try:
                await self.aliases.insert_one(document)
            except DuplicateKeyError:  # another process claimed it first
                return await self.live(projection)
            found = document
        return LiveTarget(
            found["collection"], int(found["version"]), bool(found.get("draining", False))
        )

    async def live_for_writing(self, projection: Projection) -> LiveTarget:
        """The live collection, if this version of the code built it; else refuse."""
        live = await self.live(projection)
        if live.version != projection.version:
            raise ProjectionVersionMismatch(projection, live)
        return live

    async def switch(self, projection: Projection, expected: LiveTarget, collection: str) -> None:
        """Point the alias at ``collection`` (one atomic update), if it still points at
        ``expected``; the build documents follow. The alias is ``draining`` until
        :meth:`drained`."""
        now = datetime.now(UTC)
        result = await self.aliases.update_one(
            {"_id": projection.name, "collection": expected.collection},
            {
                "$set": {
                    "collection": collection,
                    "version": projection.version,
                    "switched_at": now,
                    "previous": expected.collection,
                    "draining": True,
                }
            },
        )
        if result.matched_count != 1:
            raise AliasChanged(f"the alias of {projection.name!r} changed during the rebuild")
        await self.builds.update_one(
            {"_id": collection}, {"$set": {"state": BuildState.LIVE, "switched_at": now}}
        )
        await self.builds.update_one(
            {"_id": expected.collection},
            {
                "$set": {"state": BuildState.RETIRED, "retired_at": now},
                "$setOnInsert": {"projection": projection.name, "version": expected.version},
            },
            upsert=True,
        )

    async def drained(self, projection: Projection, collection: str) -> None:
        """The rebuild that switched to ``collection`` has applied everything the live
        worker wrote to the previous one: the live worker may write ``collection``."""
        await self.aliases.update_one(
            {"_id": projection.name, "collection": collection}, {"$unset": {"draining": ""}}
        )

    async def previous(self, projection: Projection) -> str | None:
        """The collection the alias pointed at before its last switch."""
        found = await self.aliases.find_one({"_id": projection.name})
        return None if found is None else found.get("previous")

    async def start_build(self, projection: Projection, collection: str, fields: Document) -> None:
        now = datetime.now(UTC)
        await self.builds.insert_one(
            {
                "_id": collection,
                "projection": projection.name,
                "version": projection.version,
                "state": BuildState.BUILDING,
                "events": 0,
                "documents_written": 0,
                "skipped": 0,
                "started_at": now,
                "updated_at": now,
                **fields,
            }
        )

    async def update_build(
        self, collection: str, fields: Document, increments: Document | None = None
    ) -> None:
        update: Document = {"$set": {**fields, "updated_at": datetime.now(UTC)}}
        if increments:
            update["$inc"] = increments
        await self.builds.update_one({"_id": collection}, update)

    async def build(self, collection: str) -> Document | None:
        found: Document | None = await self.builds.find_one({"_id": collection})
        return found

    async def latest_unfinished_build(self, projection: Projection) -> Document | None:
        """The newest build of this projection and version that has not finished."""
        found: Document | None = await self.builds.find_one(
            {
                "projection": projection.name,
                "version": projection.version,
                "state": {"$in": list(BuildState.IN_PROGRESS)},
            },
            sort=[("started_at", -1)],
        )
        return found

    async def offsets(self, collection: str) -> dict[tuple[str, int], int]:
        """The last offset applied to ``collection`` in each (topic, partition)."""
        return {
            (found["topic"], found["partition"]): int(found["offset"])
            async for found in self.progress.find({"collection": collection})
            if found.get("offset") is not None
        }

    async def drop(self, collection: str) -> None:
        """Drop a collection that no alias points to, its progress and its build record."""
        if await self.aliases.find_one({"collection": collection}) is not None:
            raise ValueError(f"{collection!r} is a live collection: it cannot be dropped")
        if await self.builds.find_one({"_id": collection}) is None:
            raise ValueError(
                f"{collection!r} is not a projection build (see `cqrs projections status`)"
            )
        await self.database.drop_collection(collection)
        await self.progress.delete_many({"collection": collection})
        await self.builds.delete_one({"_id": collection})
