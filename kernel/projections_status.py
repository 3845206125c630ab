"""How far each projection has got: what ``GET /projections`` and ``cqrs projections
status`` show.

Read from the projections' bookkeeping in MongoDB (``projection_aliases``: the live
collection and its version; ``projection_progress``: the last offset, position and
event time applied per topic partition; ``projection_builds``: rebuilds) and from the
broker (each partition's end offset; the lag is what lies between).
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase

log = logging.getLogger(__name__)

ALIASES = "projection_aliases"
PROGRESS = "projection_progress"
BUILDS = "projection_builds"
REBUILDING = ("building", "catching-up")
KAFKA_TIMEOUT = 3.0  # seconds

Document = dict[str, Any]


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


async def end_offsets(
    bootstrap: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Each partition's end offset (the next offset to be written); {} if unreachable."""
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT):
            await consumer.start()
        async with asyncio.timeout(KAFKA_TIMEOUT):
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    except (KafkaError, OSError, TimeoutError) as error:
        log.warning("no end offsets from %s: %r", bootstrap, error)
        return {}
    finally:
        await consumer.stop()


async def projections_status(database: AsyncDatabase[Any], bootstrap: str) -> list[Document]:
    """One entry per projection: live collection, version, per-partition progress and
    lag, total lag in events and in seconds, and rebuilds in progress."""
    aliases = [alias async for alias in database[ALIASES].find({}, sort=[("_id", 1)])]
    progress: dict[str, list[Document]] = {}
    live = {alias["collection"] for alias in aliases}
    async for entry in database[PROGRESS].find({"collection": {"$in": list(live)}}):
        progress.setdefault(entry["collection"], []).append(entry)
    partitions = [
        TopicPartition(entry["topic"], entry["partition"])
        for entries in progress.values()
        for entry in entries
    ]
    ends = await end_offsets(bootstrap, partitions)
    now = datetime.now(UTC)
    statuses = []
    for alias in aliases:
        statuses.append(
            {
                "projection": alias["_id"],
                "collection": alias["collection"],
                "version": alias["version"],
                "switched_at": _aware(alias.get("switched_at")),
                "draining": bool(alias.get("draining", False)),
                **lag_of(progress.get(alias["collection"], []), ends, now),
                "rebuilds": [
                    _build(build)
                    async for build in database[BUILDS].find(
                        {"projection": alias["_id"], "state": {"$in": list(REBUILDING)}},
                        sort=[("started_at", 1)],
                    )
                ],
            }
        )
    return statuses


def lag_of(entries: list[Document], ends: dict[TopicPartition, int], now: datetime) -> Document:
    """Lag in events (end offset - 1 - last offset applied), and in seconds: how old
    the last event applied in a partition that is behind is (0 when none is behind)."""
    partitions = []
    lag_events: int | None = 0 if ends else None
    behind_since: datetime | None = None
    for entry in sorted(entries, key=lambda e: (e["topic"], e["partition"])):
        end = ends.get(TopicPartition(entry["topic"], entry["partition"]))
        lag = None if end is None else max(0, end - 1 - int(entry.get("offset", -1)))
        event_time = _aware(entry.get("event_time"))
        partitions.append(
            {
                "topic": entry["topic"],
                "partition": entry["partition"],
                "offset": entry.get("offset"),
                "end_offset": end,
                "lag": lag,
                "position": entry.get("position"),
                "event_time": event_time,
            }
        )
        if lag is None or lag_events is None:
            lag_events = None
            continue
        lag_events += lag
        if lag and event_time is not None:
            behind_since = event_time if behind_since is None else min(behind_since, event_time)
    lag_seconds: float | None = None
    if lag_events == 0:
        lag_seconds = 0.0
    elif behind_since is not None:
        lag_seconds = round(max(0.0, (now - behind_since).total_seconds()), 3)
    return {"lag_events": lag_events, "lag_seconds": lag_seconds, "partitions": partitions}


def _build(build: Document) -> Document:
    started = _aware(build.get("started_at"))
    updated = _aware(build.get("updated_at"))
    seconds = (updated - started).total_seconds() if started and updated else 0.0
    events = int(build.get("events", 0))
    return {
        "collection": build["_id"],
        "version": build.get("version"),
        "source": build.get("source"),
        "state": build.get("state"),
        "events": events,
        "events_per_second": round(events / seconds, 1) if seconds > 0 else None,
        "started_at": started,
        "updated_at": updated,
    }


# What GET /projections answers, per projection


class ProjectionPartition(BaseModel):
    topic: str
    partition: int
    offset: int | None = Field(description="Last offset applied to the live collection.")
    end_offset: int | None = Field(description="The partition's end offset (null: no broker).")
    lag: int | None = Field(description="Messages not applied yet (null: no broker).")
    position: int | None = Field(description="Log position of the last event applied.")
    event_time: datetime | None = Field(description="Time of the last event applied.")


class ProjectionRebuild(BaseModel):
    collection: str
    version: int | None
    source: str | None = Field(description="`stores` or `kafka`.")
    state: str | None = Field(description="`building` or `catching-up`.")
    events: int = Field(description="Events applied so far.")
    events_per_second: float | None
    started_at: datetime | None
    updated_at: datetime | None


class ProjectionStatus(BaseModel):
    projection: str
    collection: str = Field(description="The live collection the query API reads.")
    version: int = Field(description="The projection version that built it.")
    switched_at: datetime | None
    draining: bool = Field(
        description="The rebuild that switched to this collection is still draining into "
        "it; the live worker waits (`cqrs replay NAME --resume` finishes a stopped drain)."
    )
    lag_events: int | None = Field(description="Sum of the partitions' lags (null: no broker).")
    lag_seconds: float | None = Field(
        description="Age of the last event applied in the partition furthest behind; "
        "0 when none is behind (null: unknown)."
    )
    partitions: list[ProjectionPartition]
    rebuilds: list[ProjectionRebuild] = Field(description="Rebuilds in progress (`cqrs replay`).")
