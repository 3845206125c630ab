"""MongoDB adapter for the orders read model and its projection progress.

Documents are written by the orders projection (``projections/``); this module only
reads them (and may create the indexes the queries need).
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from read_side.models import Order, OrderStatus

Document = dict[str, Any]

ORDERS = "orders"
PROGRESS = "projection_progress"
PROJECTION = "orders"


@dataclass(frozen=True)
class Staleness:
    """How far the orders projection has got, from its progress documents."""

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


class OrdersReadModel:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._database = database
        self._orders = database[ORDERS]
        self._progress = database[PROGRESS]

    async def ping(self) -> None:
        await self._database.command("ping")

    async def ensure_indexes(self) -> None:
        """The indexes the list queries need (the projection creates them too)."""
        await self._orders.create_index(
            [("customer_id", ASCENDING), ("created_position", DESCENDING)]
        )
        await self._orders.create_index([("status", ASCENDING), ("created_position", DESCENDING)])
        await self._orders.create_index([("created_position", DESCENDING)])

    async def get(self, order_id: str) -> Order | None:
        document = await self._orders.find_one({"_id": order_id})
        return None if document is None else Order.model_validate(document)

    async def newest_first(
        self,
        *,
        customer_id: str | None,
        status: OrderStatus | None,
        before: int | None,
        limit: int,
    ) -> list[Order]:
        """Orders by created_position descending, those below ``before`` only."""
        query: Document = {}
        if customer_id is not None:
            query["customer_id"] = customer_id
        if status is not None:
            query["status"] = status.value
        if before is not None:
            query["created_position"] = {"$lt": before}
        cursor = self._orders.find(query).sort("created_position", DESCENDING).limit(limit)
        return [Order.model_validate(document) async for document in cursor]

    async def has_version(self, order_id: str, version: int) -> bool:
        found = await self._orders.find_one(
            {"_id": order_id, "version": {"$gte": version}}, projection={"_id": 1}
        )
        return found is not None

    async def wait_for_version(
        self, order_id: str, version: int, *, timeout: float, interval: float = 0.02
    ) -> bool:
        """Poll until the order holds ``version`` or later; False if the timeout passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.has_version(order_id, version):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(interval, remaining))
        return True

    async def staleness(self) -> Staleness:
        position = 0
        event_time: datetime | None = None
        async for progress in self._progress.find(
            {"projection": PROJECTION}, projection={"position": 1, "event_time": 1}
        ):
            position = max(position, int(progress.get("position") or 0))
            applied: datetime | None = progress.get("event_time")
            if applied is not None:
                if applied.tzinfo is None:  # a client without tz_aware=True
                    applied = applied.replace(tzinfo=UTC)
                event_time = applied if event_time is None else max(event_time, applied)
        return Staleness(position, event_time)
