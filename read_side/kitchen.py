"""The kitchen's query routes, the reference createOrder saga's: ``/tickets`` (the
kitchen's tickets), over the read model of ``projections/tickets.py``. Document shapes:
``docs/read-models.md``.

A ticket is made by the saga, not by a command of the caller's: these routes take no
consistency token and carry no staleness headers. A restaurant sees only its own tickets
(docs/auth.md), ops every one.
"""

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar
from uuid import UUID

from fastapi import Depends, HTTPException, Query
from pydantic import BaseModel, BeforeValidator, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from contracts.kitchen import TicketStatus
from kernel.auth import RestaurantOrOps
from kernel.read_models import (
    STORE_UNAVAILABLE,
    Cursor,
    Document,
    Limit,
    Page,
    ReadModel,
    ReadModelDocument,
    aware,
    empty_list_if_null,
    page_start,
    read_model_routes,
)

TICKETS = "tickets"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class LineItem(BaseModel):
    menu_item_id: str
    quantity: int
    unit_price_cents: int


class Ticket(ReadModelDocument):
    """One kitchen ticket (its id is its order's id)."""

    id_field = "order_id"

    order_id: UUID
    restaurant_id: str
    consumer_id: str | None = Field(default=None, description="Null for a rejected ticket.")
    line_items: Annotated[list[LineItem], BeforeValidator(empty_list_if_null)] = Field(
        default_factory=list, description="Empty for a rejected ticket."
    )
    total_cents: int | None = Field(default=None, description="Null for a rejected ticket.")
    status: TicketStatus
    reason: str | None = None
    version: int = Field(description="Ticket aggregate version of the last applied event.")
    updated_at: datetime = Field(description="Time of the last applied event.")


class TicketPage(Page[Ticket]):
    pass


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


class TicketsReadModel(ReadModel):
    """The ``tickets`` collection: one document per kitchen ticket, ``_id`` = order id."""

    # Keyset indexes of the list: (filter,) updated_at desc, _id desc.
    indexes: ClassVar[list[IndexModel]] = [
        IndexModel([("restaurant_id", ASCENDING), ("updated_at", DESCENDING), ("_id", DESCENDING)]),
        IndexModel([("status", ASCENDING), ("updated_at", DESCENDING), ("_id", DESCENDING)]),
        IndexModel([("updated_at", DESCENDING), ("_id", DESCENDING)]),
    ]

    async def get(self, order_id: str) -> Ticket | None:
        tickets = await self.collection()
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
        collection = await self.collection()
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


router, _read_model = read_model_routes(TICKETS, kind=TicketsReadModel)
Tickets = Annotated[TicketsReadModel, Depends(_read_model)]


@router.get(
    "/tickets/{order_id}",
    tags=["tickets"],
    summary="One kitchen ticket",
    description="The ticket of an order (a ticket's id is its order's id), as the tickets "
    "projection last applied it.",
    responses={
        404: {"description": "No such ticket (yet)."},
        **STORE_UNAVAILABLE,
    },
)
async def get_ticket(order_id: UUID, tickets: Tickets, caller: RestaurantOrOps) -> Ticket:
    ticket = await tickets.get(str(order_id))
    if ticket is None:
        raise HTTPException(404, f"ticket {order_id} not found")
    caller.authorize(f"ticket {order_id}", restaurant=ticket.restaurant_id)
    return ticket


@router.get(
    "/tickets",
    tags=["tickets"],
    summary="Kitchen tickets, most recently updated first",
    description="Tickets by `updated_at` (the time of their last event), newest first, "
    "optionally of one restaurant and/or in one status. Page with `limit` and the "
    "`next_cursor` of the previous page (null on the last page). A ticket updated while "
    "you page moves to the front: it may be missed by, or repeated in, later pages.",
    responses={
        400: {"description": "Malformed cursor."},
        **STORE_UNAVAILABLE,
    },
)
async def list_tickets(
    tickets: Tickets,
    caller: RestaurantOrOps,
    restaurant_id: Annotated[str | None, Query(min_length=1)] = None,
    status: TicketStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> TicketPage:
    # A restaurant lists its own tickets only.
    restaurant_id = caller.own_only(restaurant_id, f"the tickets of restaurant {restaurant_id}")
    after = page_start(cursor, TicketCursor.decode)
    page, following = await tickets.newest_first(
        restaurant_id=restaurant_id, status=status, after=after, limit=limit
    )
    return TicketPage(items=page, next_cursor=following.encode() if following is not None else None)
