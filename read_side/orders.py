"""The orders' query routes, the reference createOrder saga's: ``/orders`` (orders with
their saga and timeline), ``/consumers/{consumer_id}/orders`` (one consumer's orders: the
same list) and ``/sagas/stuck`` (orders whose saga has been pending too long), over the
read model of ``projections/orders.py``. Document shapes: ``docs/read-models.md``. An order document
whose ``OrderCreated`` the projection has not applied yet (no ``created_position``) is not
shown anywhere: ``404`` and not listed.

The router's lifespan (run inside the query API's, which opens the database) makes the
read model and its indexes.

Eventual consistency is made visible in two ways.

Read-your-writes
    Every ``/orders`` and ``/consumers/{consumer_id}/orders`` route accepts a
    consistency token, the one a command answered
    with (header ``X-Consistency-Token`` or query parameter ``consistency_token``;
    format ``service:position:aggregate_id:version``, see ``contracts.consistency``).
    Only ``orders`` tokens apply here (``kernel.read_models``). The query waits (polling every 20 ms, at most
    ``READ_YOUR_WRITES_TIMEOUT`` seconds) until the order named by the token holds that
    version or a later one, then answers. If it does not get there in time the answer
    is ``503`` with ``Retry-After: 1``: the read model has not caught up yet; retry.
    A malformed token, or one of another service, is a ``400``; an empty one is no token.

Staleness headers
    Every ``200``, ``404`` and ``503`` (not caught up) answer of those routes says how
    far the orders projection had got on the ``orders`` topic when the answer was read,
    from its ``projection_progress`` documents of projection ``orders`` and topic
    ``orders`` (read just before the orders themselves, so the answer holds at least
    that much; its progress on the other services' topics is in positions of other
    logs, which are not comparable, and is not reported):

    ``X-Read-Model-Position``
        highest orders-log position applied in any partition (``0`` if none yet);
        partitions progress independently, so a lower position of another partition
        may still be pending (the token, per order, is what read-your-writes uses);
    ``X-Read-Model-Event-Time``
        ISO 8601 time of the newest event applied (absent if none yet);
    ``X-Read-Model-Age``
        seconds, 3 decimals: now minus that event time, i.e. how old the newest fact
        the read model knows is (absent if none yet; never negative).

    ``400``/``422`` answers are about the request itself and carry none of them; a
    ``503`` because MongoDB is unreachable cannot carry them either.

Authorization (docs/auth.md): an order and its timeline are its customer's, its
restaurant's and ops'; the lists of orders show a customer only their own (asking for
another customer's is a ``403``); ``/sagas/stuck`` is ops'.

``/sagas/stuck`` takes no consistency token and carries no staleness headers (a saga's
state comes from four logs).
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from uuid import UUID

from fastapi import Depends, HTTPException, Path, Query, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from contracts.consistency import ConsistencyToken
from contracts.kitchen import TicketStatus
from kernel.auth import CustomerOrOps, CustomerOrRestaurantOrOps, OpsOnly
from kernel.read_models import (
    STORE_UNAVAILABLE,
    Cursor,
    Document,
    Limit,
    Page,
    ReadModel,
    ReadModelDocument,
    consistency_token,
    empty_list_if_null,
    page_start,
    read_model_routes,
)

SERVICE = "orders"  # the write-side service whose tokens these routes honour
ORDERS = "orders"

# An order document exists before its OrderCreated has been applied (saga events of
# other topics may come first); until then it has no created_position and is not shown.
VISIBLE: Document = {"created_position": {"$ne": None}}
# Bookkeeping the projection keeps in the documents; never read (the response models
# drop every ``_`` field other than ``_id`` anyway).
_BOOKKEEPING: Document = {"_applied": 0, "_rev": 0}


# Response models: the public shape of the documents (docs/read-models.md)


class OrderStatus(StrEnum):
    APPROVAL_PENDING = "APPROVAL_PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


class SagaState(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class ConsumerVerification(StrEnum):
    VERIFIED = "VERIFIED"
    FAILED = "FAILED"


class CardAuthorization(StrEnum):
    AUTHORIZED = "AUTHORIZED"
    FAILED = "FAILED"


class SagaStep(StrEnum):
    """The saga participant whose step failed."""

    CONSUMERS = "consumers"
    KITCHEN = "kitchen"
    ACCOUNTING = "accounting"


class LineItem(BaseModel):
    menu_item_id: str
    quantity: int
    unit_price_cents: int


class DeliveryAddress(BaseModel):
    street: str = Field(description="Street and number; the whole address for v1 orders.")
    city: str | None = None
    postal_code: str | None = None
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2 code.")


def _street_if_text(value: Any) -> Any:
    return {"street": value} if isinstance(value, str) else value


class Saga(BaseModel):
    """Where the createOrder saga stands, as far as the projection has seen it."""

    model_config = ConfigDict(extra="ignore")

    state: SagaState | None = Field(
        default=None, description="Null only in documents written before the saga existed."
    )
    consumer_verification: ConsumerVerification | None = None
    ticket: TicketStatus | None = None
    card_authorization: CardAuthorization | None = None
    failed_step: SagaStep | None = None
    reason: str | None = None


class TimelineEntry(BaseModel):
    """One event of the order's saga, from whichever service published it."""

    model_config = ConfigDict(extra="ignore")

    service: str = Field(description="The publishing service, e.g. `kitchen`.")
    event: str = Field(description="The wire type, e.g. `kitchen.TicketCreated.v1`.")
    time: datetime
    event_id: str
    detail: str | None = Field(default=None, description="A short text, or null.")


def _empty_saga_if_null(value: Any) -> Any:
    return Saga() if value is None else value


def _by_time(timeline: list[TimelineEntry]) -> list[TimelineEntry]:
    # The projection appends in arrival order; events of four topics arrive in any
    # order. sorted() is stable: entries with equal times keep their arrival order.
    return sorted(timeline, key=lambda entry: entry.time)


class SagaView(ReadModelDocument):
    """Fields shared by every view of an order's saga."""

    id_field = "order_id"

    order_id: UUID
    saga: Annotated[Saga, BeforeValidator(_empty_saga_if_null)] = Field(default_factory=Saga)
    timeline: Annotated[
        list[TimelineEntry], BeforeValidator(empty_list_if_null), AfterValidator(_by_time)
    ] = Field(default_factory=list, description="The saga's events, sorted by time.")


class Order(SagaView):
    """One order as the orders projection last saw it."""

    customer_id: str
    restaurant_id: str
    delivery_address: Annotated[DeliveryAddress, BeforeValidator(_street_if_text)]
    line_items: list[LineItem]
    total_cents: int
    status: OrderStatus
    rejection_reason: str | None = None
    failed_step: SagaStep | None = None
    cancellation_reason: str | None = None
    created_position: int = Field(
        description="Position of the creating event in the orders service log; "
        "the list is ordered by it, newest first."
    )
    created_at: datetime
    version: int = Field(description="Aggregate version of the last applied event.")
    position: int = Field(description="Log position of the last applied event.")
    updated_at: datetime = Field(description="Time of the last applied event.")


class OrderPage(Page[Order]):
    pass


class OrderTimeline(SagaView):
    """An order's saga state and its events."""


class StuckSaga(SagaView):
    """An order still APPROVAL_PENDING longer than asked."""

    created_at: datetime
    age_seconds: float = Field(description="Seconds since created_at, as of `as_of`.")


class StuckSagas(BaseModel):
    as_of: datetime = Field(description="The time the ages were computed against.")
    items: list[StuckSaga] = Field(description="Oldest first.")


class OrdersReadModel(ReadModel):
    """The ``orders`` collection (orders with their sagas); staleness and
    read-your-writes on the orders topic (the tokens of the orders service)."""

    visible = VISIBLE
    indexes: ClassVar[list[IndexModel]] = [
        IndexModel([("customer_id", ASCENDING), ("created_position", DESCENDING)]),
        IndexModel([("status", ASCENDING), ("created_position", DESCENDING)]),
        IndexModel([("created_position", DESCENDING)]),
        IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
    ]

    def __init__(
        self, database: AsyncDatabase[Document], projection: str = ORDERS, **options: Any
    ) -> None:
        super().__init__(database, projection, **options)

    async def get(self, order_id: str) -> Order | None:
        """The order, or None when there is none or its OrderCreated is not applied yet."""
        orders = await self.collection()
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
        orders = await self.collection()
        cursor = orders.find(query, _BOOKKEEPING).sort("created_position", DESCENDING).limit(limit)
        return [Order.model_validate(document) async for document in cursor]

    async def pending_since(self, cutoff: datetime, *, limit: int) -> list[Order]:
        """Visible orders still APPROVAL_PENDING created before ``cutoff``, oldest first."""
        query: Document = {
            "status": OrderStatus.APPROVAL_PENDING.value,
            "created_at": {"$lt": cutoff},
            **VISIBLE,
        }
        orders = await self.collection()
        cursor = (
            orders.find(query, _BOOKKEEPING)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [Order.model_validate(document) async for document in cursor]


# Routes

_CURSOR = re.compile(r"[1-9][0-9]{0,18}")  # a created_position (fits a BSON int64)

_STALENESS_HEADERS: dict[str, Any] = {
    "X-Read-Model-Position": {
        "description": "Highest orders-log position the projection has applied (0: none).",
        "schema": {"type": "integer"},
    },
    "X-Read-Model-Event-Time": {
        "description": "Time of the newest orders event the projection has applied (absent: none).",
        "schema": {"type": "string", "format": "date-time"},
    },
    "X-Read-Model-Age": {
        "description": "Seconds (3 decimals) since that event time: how old the newest "
        "fact in the read model is (absent: none).",
        "schema": {"type": "string", "example": "0.412"},
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": _STALENESS_HEADERS},
    400: {"description": "Malformed cursor or consistency token."},
    503: {
        "description": "The read model has not reached the consistency token within "
        "READ_YOUR_WRITES_TIMEOUT (retry), or MongoDB is unreachable.",
        "headers": {
            **_STALENESS_HEADERS,
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            },
        },
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No such order (yet: its OrderCreated is not applied).",
        "headers": _STALENESS_HEADERS,
    },
}
_CONSISTENCY_DOC = """
**Read-your-writes.** Pass the consistency token a command returned (header
`X-Consistency-Token` or query `consistency_token`); the answer waits until the read
model holds that version of the order, or is `503` with `Retry-After: 1` when it does not
get there within `READ_YOUR_WRITES_TIMEOUT` seconds.

**Staleness.** `200`, `404` and not-caught-up `503` answers carry `X-Read-Model-Position`
(highest orders-log position applied in any partition; partitions progress independently,
so a lower position of another partition may still be pending), `X-Read-Model-Event-Time`
(time of the newest applied orders event) and `X-Read-Model-Age` (seconds since then,
3 decimals). They describe the orders topic only: the saga's events of the other
services' topics may lag behind it.
"""
_SAGA_DOC = """
`saga` is where the createOrder saga stands (`state`, then each participant's step:
`consumer_verification`, `ticket`, `card_authorization`, and `failed_step`/`reason`
when one failed); `timeline` lists the saga's events of all four services, sorted by
`time` (events with equal times keep the order they were applied in). Both may lag
behind: each service's events reach the read model independently.
"""


router, _read_model = read_model_routes(ORDERS, kind=OrdersReadModel)
Orders = Annotated[OrdersReadModel, Depends(_read_model)]
Token = Annotated[ConsistencyToken | None, Depends(consistency_token(SERVICE))]


def _created_position(cursor: str) -> int:
    """The created_position an orders cursor names; ``ValueError`` if it names none."""
    if not _CURSOR.fullmatch(cursor) or int(cursor) >= 2**63:
        raise ValueError(cursor)
    return int(cursor)


async def _visible_order(
    order_id: UUID,
    response: Response,
    read_model: Orders,
    token: Token,
    caller: CustomerOrRestaurantOrOps,
) -> Order:
    """The order (404 if not visible yet, 403 if not the caller's), with the staleness
    headers set."""
    staleness = await read_model.caught_up(token)
    order = await read_model.get(str(order_id))
    headers = staleness.headers(datetime.now(UTC))
    if order is None:
        raise HTTPException(404, f"order {order_id} not found", headers=headers)
    response.headers.update(headers)
    caller.authorize(
        f"order {order_id}", customer=order.customer_id, restaurant=order.restaurant_id
    )
    return order


VisibleOrder = Annotated[Order, Depends(_visible_order)]
"""The order of the route's ``order_id`` (a dependency)."""


@dataclass
class OrderList:
    """What both lists of orders take besides whose orders (a dependency): the read
    model, the consistency token, the status filter and the page asked for."""

    response: Response
    read_model: Orders
    token: Token
    status: OrderStatus | None = None
    limit: Limit = 20
    cursor: Cursor = None

    async def page(self, customer_id: str | None) -> OrderPage:
        """The page of ``customer_id``'s orders (None: everyone's)."""
        before = page_start(self.cursor, _created_position)
        staleness = await self.read_model.caught_up(self.token)
        # One more than asked tells whether another page follows.
        orders = await self.read_model.newest_first(
            customer_id=customer_id, status=self.status, before=before, limit=self.limit + 1
        )
        page, more = orders[: self.limit], len(orders) > self.limit
        self.response.headers.update(staleness.headers(datetime.now(UTC)))
        return OrderPage(items=page, next_cursor=str(page[-1].created_position) if more else None)


@router.get(
    "/orders/{order_id}",
    tags=["orders"],
    summary="One order, with its saga",
    description="The order as the projection last applied it." + _SAGA_DOC + _CONSISTENCY_DOC,
    responses={**_RESPONSES, **_NOT_FOUND},
)
async def get_order(order: VisibleOrder) -> Order:
    return order


@router.get(
    "/orders/{order_id}/timeline",
    tags=["orders", "sagas"],
    summary="An order's saga and its events",
    description="Only the order's saga state and timeline." + _SAGA_DOC + _CONSISTENCY_DOC,
    responses={**_RESPONSES, **_NOT_FOUND},
)
async def get_order_timeline(order: VisibleOrder) -> OrderTimeline:
    return OrderTimeline(order_id=order.order_id, saga=order.saga, timeline=order.timeline)


@router.get(
    "/orders",
    tags=["orders"],
    summary="Orders, newest first",
    description="Orders ordered by `created_position`, newest first, optionally of one "
    "customer and/or in one status. Page with `limit` and the `next_cursor` of the "
    "previous page (null on the last page)." + _CONSISTENCY_DOC,
    responses=_RESPONSES,
)
async def list_orders(
    orders: Annotated[OrderList, Depends()],
    caller: CustomerOrOps,
    customer_id: Annotated[str | None, Query(min_length=1)] = None,
) -> OrderPage:
    # A customer lists their own orders only.
    customer_id = caller.own_only(customer_id, f"the orders of customer {customer_id}")
    return await orders.page(customer_id)


@router.get(
    "/consumers/{consumer_id}/orders",
    tags=["consumers", "orders"],
    summary="One consumer's orders, newest first",
    description="The same list as `GET /orders?customer_id={consumer_id}` (an order's "
    "`customer_id` is its consumer's id): by `created_position`, newest first, optionally "
    "in one status, paged with `limit` and `next_cursor`." + _CONSISTENCY_DOC,
    responses=_RESPONSES,
)
async def list_consumer_orders(
    consumer_id: Annotated[str, Path(min_length=1)],
    orders: Annotated[OrderList, Depends()],
    caller: CustomerOrOps,
) -> OrderPage:
    caller.authorize(f"the orders of consumer {consumer_id}", customer=consumer_id)
    return await orders.page(consumer_id)


@router.get(
    "/sagas/stuck",
    tags=["sagas"],
    summary="Orders whose saga has been pending too long",
    description="Orders still `APPROVAL_PENDING` created more than `older_than` seconds "
    "ago, oldest first (at most `limit`), with their saga and timeline: the saga steps "
    "that have not answered show as null. The read model lags behind the services, so a "
    "saga listed here may have moved on already." + _SAGA_DOC,
    responses=STORE_UNAVAILABLE,
)
async def stuck_sagas(
    read_model: Orders,
    caller: OpsOnly,
    older_than: Annotated[
        float,
        Query(gt=0, allow_inf_nan=False, description="Seconds since the order was created."),
    ],
    limit: Limit = 20,
) -> StuckSagas:
    now = datetime.now(UTC)
    try:
        cutoff = now - timedelta(seconds=older_than)
    except OverflowError:  # before year 1: no order is that old
        return StuckSagas(as_of=now, items=[])
    orders = await read_model.pending_since(cutoff, limit=limit)
    return StuckSagas(
        as_of=now,
        items=[
            StuckSaga(
                order_id=order.order_id,
                created_at=order.created_at,
                age_seconds=round((now - order.created_at).total_seconds(), 3),
                saga=order.saga,
                timeline=order.timeline,
            )
            for order in orders
        ],
    )
