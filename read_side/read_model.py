"""MongoDB adapters for the read models the query API serves.

Documents are written by the projections worker (``projections/``); this module only
reads them (and creates the indexes the queries need). Their shapes are described in
``docs/read-models.md``.
"""

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from kernel.read_models import (
    PROGRESS,
    Document,
    LiveCollections,
    Staleness,
    aware,
    ensure_indexes,
)
from read_side.models import Order, OrderStatus, Ticket, TicketStatus

log = logging.getLogger(__name__)

ORDERS = "orders"
TICKETS = "tickets"
# The staleness headers of the orders routes: the orders projection's progress on the
# orders topic only (positions of other services' logs are not comparable).
PROJECTION = "orders"
PROGRESS_TOPIC = "orders"

# An order document exists before its OrderCreated has been applied (saga events of
# other topics may come first); until then it has no created_position and is not shown.
VISIBLE: Document = {"created_position": {"$ne": None}}
# Bookkeeping the projection keeps in the documents; never read (the response models
# drop every ``_`` field other than ``_id`` anyway).
_BOOKKEEPING: Document = {"_applied": 0, "_rev": 0}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class OrdersReadModel:
    """The ``orders`` collection (orders with their sagas) and the orders progress."""

    def __init__(
        self, database: AsyncDatabase[Document], live: LiveCollections | None = None
    ) -> None:
        self._database = database
        self._live = live or LiveCollections(database)
        self._progress = database[PROGRESS]
        self._staleness_read: asyncio.Future[Staleness] | None = None

    async def _orders(self) -> AsyncCollection[Document]:
        return await self._live.get(ORDERS)

    async def ping(self) -> None:
        await self._database.command("ping")

    async def ensure_indexes(self) -> None:
        """The indexes the list queries need (the projection creates them too)."""
        await ensure_indexes(
            await self._orders(),
            [
                IndexModel([("customer_id", ASCENDING), ("created_position", DESCENDING)]),
                IndexModel([("status", ASCENDING), ("created_position", DESCENDING)]),
                IndexModel([("created_position", DESCENDING)]),
                IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
            ],
        )

    async def get(self, order_id: str) -> Order | None:
        """The order, or None when there is none or its OrderCreated is not applied yet."""
        orders = await self._orders()
        document = await orders.find_one({"_id": order_id, **VISIBLE}, _BOOKKEEPING)
        return None if document is None else Order.model_validate(document)

    async def newest_first(
        self,
        *,
        customer_id: str | None,
        status: OrderStatus | None,
        before: int | None,
        limit: int,
    ) -> list[Order]:
        """Visible orders by created_position descending, those below ``before`` only."""
        created_position: Document = dict(VISIBLE["created_position"])
        if before is not None:
            created_position["$lt"] = before
        query: Document = {"created_position": created_position}
        if customer_id is not None:
            query["customer_id"] = customer_id
        if status is not None:
            query["status"] = status.value
        orders = await self._orders()
        cursor = orders.find(query, _BOOKKEEPING).sort("created_position", DESCENDING).limit(limit)
        return [Order.model_validate(document) async for document in cursor]

    async def pending_since(self, cutoff: datetime, *, limit: int) -> list[Order]:
        """Visible orders still APPROVAL_PENDING created before ``cutoff``, oldest first."""
        query: Document = {
            "status": OrderStatus.APPROVAL_PENDING.value,
            "created_at": {"$lt": cutoff},
            **VISIBLE,
        }
        orders = await self._orders()
        cursor = (
            orders.find(query, _BOOKKEEPING)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [Order.model_validate(document) async for document in cursor]

    async def has_version(self, order_id: str, version: int) -> bool:
        orders = await self._orders()
        found = await orders.find_one(
            {"_id": order_id, "version": {"$gte": version}, **VISIBLE}, projection={"_id": 1}
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
        """The projection's progress, read before the answer's documents.

        Requests that come while a read of it is in flight share that read: one query
        for them all under load. What it returns is never ahead of what they read next
        (the progress is written after the documents), only as fresh as a read that
        began at most one query's time before they came.
        """
        if self._staleness_read is None:
            read = asyncio.ensure_future(self._read_staleness())
            read.add_done_callback(self._staleness_read_done)
            self._staleness_read = read
        # Shielded: one request cancelled does not cancel the read the others await.
        return await asyncio.shield(self._staleness_read)

    def _staleness_read_done(self, read: "asyncio.Future[Staleness]") -> None:
        if self._staleness_read is read:
            self._staleness_read = None
        if not read.cancelled():
            read.exception()  # retrieved: not logged as "never retrieved" if none awaits

    async def _read_staleness(self) -> Staleness:
        position = 0
        event_time: datetime | None = None
        collection = await self._live.name(ORDERS)
        async for progress in self._progress.find(
            {
                "projection": PROJECTION,
                "topic": PROGRESS_TOPIC,
                # Progress recorded before collections were versioned names none.
                "collection": {"$in": [collection, None]} if collection == ORDERS else collection,
            },
            projection={"position": 1, "event_time": 1},
        ):
            position = max(position, int(progress.get("position") or 0))
            applied: datetime | None = progress.get("event_time")
            if applied is not None:
                applied = aware(applied)  # a client without tz_aware=True
                event_time = applied if event_time is None else max(event_time, applied)
        return Staleness(position, event_time)


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class TicketCursor:
    """Where a page of tickets ended: the last ticket's (updated_at, _id)."""

    updated_at: datetime
    ticket_id: str

    def encode(self) -> str:
        millis = (aware(self.updated_at) - _EPOCH) // _MILLISECOND
        raw = json.dumps([millis, self.ticket_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "TicketCursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            millis, ticket_id = json.loads(raw)
            if type(millis) is not int or not isinstance(ticket_id, str) or not ticket_id:
                raise InvalidCursor(text)
            ticket_id.encode()  # a lone surrogate is no id MongoDB could be asked for
            return cls(_EPOCH + millis * _MILLISECOND, ticket_id)
        except (binascii.Error, ValueError, TypeError, OverflowError):
            raise InvalidCursor(text) from None


class TicketsReadModel:
    """The ``tickets`` collection: one document per kitchen ticket, ``_id`` = order id."""

    def __init__(
        self, database: AsyncDatabase[Document], live: LiveCollections | None = None
    ) -> None:
        self._live = live or LiveCollections(database)

    async def _tickets(self) -> AsyncCollection[Document]:
        return await self._live.get(TICKETS)

    async def ensure_indexes(self) -> None:
        """Keyset indexes of the list: (filter,) updated_at desc, _id desc."""
        await ensure_indexes(
            await self._tickets(),
            [
                IndexModel(
                    [("restaurant_id", ASCENDING), ("updated_at", DESCENDING), ("_id", DESCENDING)]
                ),
                IndexModel(
                    [("status", ASCENDING), ("updated_at", DESCENDING), ("_id", DESCENDING)]
                ),
                IndexModel([("updated_at", DESCENDING), ("_id", DESCENDING)]),
            ],
        )

    async def get(self, order_id: str) -> Ticket | None:
        tickets = await self._tickets()
        document = await tickets.find_one({"_id": order_id})
        return None if document is None else Ticket.model_validate(document)

    async def newest_first(
        self,
        *,
        restaurant_id: str | None,
        status: TicketStatus | None,
        after: TicketCursor | None,
        limit: int,
    ) -> tuple[list[Ticket], TicketCursor | None]:
        """Up to ``limit`` tickets by (updated_at, _id) descending, past ``after`` only;
        and the cursor of the next page (None on the last page)."""
        query: Document = {}
        if restaurant_id is not None:
            query["restaurant_id"] = restaurant_id
        if status is not None:
            query["status"] = status.value
        if after is not None:
            query["$or"] = [
                {"updated_at": {"$lt": after.updated_at}},
                {"updated_at": after.updated_at, "_id": {"$lt": after.ticket_id}},
            ]
        # One more than asked tells whether another page follows.
        collection = await self._tickets()
        cursor = (
            collection.find(query)
            .sort([("updated_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit + 1)
        )
        documents = [document async for document in cursor]
        page = documents[:limit]
        tickets = [Ticket.model_validate(document) for document in page]
        if len(documents) <= limit:
            return tickets, None
        last = page[-1]
        return tickets, TicketCursor(last["updated_at"], str(last["_id"]))
