"""The reference createOrder saga's query routes: ``/orders`` (orders with their saga and
timeline), ``/consumers/{consumer_id}/orders`` (one consumer's orders: the same list),
``/tickets`` (the kitchen's tickets) and ``/sagas/stuck`` (orders whose saga has been
pending too long), over the read models of ``projections/orders.py`` and
``projections/tickets.py``. Document shapes: ``docs/read-models.md``. An order document
whose ``OrderCreated`` the projection has not applied yet (no ``created_position``) is not
shown anywhere: ``404`` and not listed.

The router's lifespan (run inside the query API's, which opens the database) makes the
read models and their indexes.

Eventual consistency is made visible in two ways.

Read-your-writes
    Every ``/orders`` and ``/consumers/{consumer_id}/orders`` route accepts a
    consistency token, the one a command answered
    with (header ``X-Consistency-Token`` or query parameter ``consistency_token``;
    format ``service:position:aggregate_id:version``, see ``contracts.consistency``).
    Only ``orders`` tokens apply here. The query waits (polling every 20 ms, at most
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
another customer's is a ``403``), the lists of tickets a restaurant only its own;
``/sagas/stuck`` is ops'.

``/tickets`` and ``/sagas/stuck`` take no consistency token and carry no staleness
headers (the tickets projection's progress is on the kitchen log; a saga's state comes
from four logs).
"""

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast
from uuid import UUID

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from contracts.consistency import ConsistencyToken, InvalidToken
from kernel.auth import (
    CustomerOrOps,
    CustomerOrRestaurantOrOps,
    Forbidden,
    OpsOnly,
    RestaurantOrOps,
)
from read_side.models import (
    Order,
    OrderPage,
    OrderStatus,
    OrderTimeline,
    StuckSaga,
    StuckSagas,
    Ticket,
    TicketPage,
    TicketStatus,
)
from read_side.read_model import (
    Document,
    InvalidCursor,
    LiveCollections,
    OrdersReadModel,
    Staleness,
    TicketCursor,
    TicketsReadModel,
)
from read_side.settings import QuerySettings

log = logging.getLogger(__name__)

SERVICE = "orders"  # the write-side service whose tokens these routes honour
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
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "MongoDB is unreachable (retry).",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            },
        },
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


@asynccontextmanager
async def _read_models(app: FastAPI) -> AsyncIterator[None]:
    database = cast(AsyncDatabase[Document], app.state.database)
    live = cast(LiveCollections, app.state.live)
    read_model = OrdersReadModel(database, live)
    tickets = TicketsReadModel(database, live)
    try:  # idempotent
        await read_model.ensure_indexes()
        await tickets.ensure_indexes()
    except PyMongoError as error:
        # The projections create theirs too; the API can serve without them.
        log.warning("could not ensure the read models' indexes: %s", error)
    app.state.read_model = read_model
    app.state.tickets = tickets
    yield


router = APIRouter(lifespan=_read_models)


async def _read_model(request: Request) -> OrdersReadModel:
    return cast(OrdersReadModel, request.app.state.read_model)


async def _tickets(request: Request) -> TicketsReadModel:
    return cast(TicketsReadModel, request.app.state.tickets)


async def _settings(request: Request) -> QuerySettings:
    return cast(QuerySettings, request.app.state.settings)


async def consistency_token(
    header: Annotated[
        str | None,
        Header(
            alias="X-Consistency-Token",
            description="Consistency token from a command (service:position:aggregate_id:version).",
        ),
    ] = None,
    query: Annotated[
        str | None,
        Query(alias="consistency_token", description="Same as the X-Consistency-Token header."),
    ] = None,
) -> ConsistencyToken | None:
    header, query = header or None, query or None  # empty: absent, as a missing one
    if header is not None and query is not None and header != query:
        raise HTTPException(400, "X-Consistency-Token and consistency_token disagree")
    text = header if header is not None else query
    if text is None:
        return None
    try:
        token = ConsistencyToken.parse(text)
    except InvalidToken as error:
        raise HTTPException(400, str(error)) from None
    if token.service != SERVICE:
        raise HTTPException(
            400, f"consistency token of service {token.service!r} does not apply to {SERVICE!r}"
        )
    return token


ReadModel = Annotated[OrdersReadModel, Depends(_read_model)]
Tickets = Annotated[TicketsReadModel, Depends(_tickets)]
Settings = Annotated[QuerySettings, Depends(_settings)]
Token = Annotated[ConsistencyToken | None, Depends(consistency_token)]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(description="Opaque: a previous page's next_cursor.")]


async def _catch_up(
    read_model: OrdersReadModel, settings: QuerySettings, token: ConsistencyToken | None
) -> Staleness:
    """Wait for the token (if any), then snapshot the projection's progress."""
    if token is not None:
        reached = await read_model.wait_for_version(
            token.aggregate_id, token.version, timeout=settings.read_your_writes_timeout
        )
        if not reached:
            staleness = await read_model.staleness()
            raise HTTPException(
                503,
                f"the read model has not caught up with consistency token {token} yet "
                f"(order {token.aggregate_id} version {token.version} not applied within "
                f"{settings.read_your_writes_timeout:g} s); retry later",
                headers={"Retry-After": "1", **staleness.headers(datetime.now(UTC))},
            )
    return await read_model.staleness()


async def _visible_order(
    order_id: UUID,
    response: Response,
    read_model: OrdersReadModel,
    settings: QuerySettings,
    token: ConsistencyToken | None,
) -> Order:
    """The order (404 if not visible yet), with the staleness headers set."""
    staleness = await _catch_up(read_model, settings, token)
    order = await read_model.get(str(order_id))
    headers = staleness.headers(datetime.now(UTC))
    if order is None:
        raise HTTPException(404, f"order {order_id} not found", headers=headers)
    response.headers.update(headers)
    return order


async def _order_page(
    response: Response,
    read_model: OrdersReadModel,
    settings: QuerySettings,
    token: ConsistencyToken | None,
    *,
    customer_id: str | None,
    status: OrderStatus | None,
    limit: int,
    cursor: str | None,
) -> OrderPage:
    """One page of the orders list (``GET /orders`` and a consumer's orders)."""
    before: int | None = None
    if cursor:  # an empty cursor is the first page, as a missing one
        if not _CURSOR.fullmatch(cursor) or int(cursor) >= 2**63:
            raise HTTPException(400, "invalid cursor")
        before = int(cursor)
    staleness = await _catch_up(read_model, settings, token)
    # One more than asked tells whether another page follows.
    orders = await read_model.newest_first(
        customer_id=customer_id, status=status, before=before, limit=limit + 1
    )
    page, more = orders[:limit], len(orders) > limit
    response.headers.update(staleness.headers(datetime.now(UTC)))
    return OrderPage(items=page, next_cursor=str(page[-1].created_position) if more else None)


@router.get(
    "/orders/{order_id}",
    tags=["orders"],
    summary="One order, with its saga",
    description="The order as the projection last applied it." + _SAGA_DOC + _CONSISTENCY_DOC,
    responses={**_RESPONSES, **_NOT_FOUND},
)
async def get_order(
    order_id: UUID,
    response: Response,
    read_model: ReadModel,
    settings: Settings,
    token: Token,
    caller: CustomerOrRestaurantOrOps,
) -> Order:
    order = await _visible_order(order_id, response, read_model, settings, token)
    caller.authorize(
        f"order {order_id}", customer=order.customer_id, restaurant=order.restaurant_id
    )
    return order


@router.get(
    "/orders/{order_id}/timeline",
    tags=["orders", "sagas"],
    summary="An order's saga and its events",
    description="Only the order's saga state and timeline." + _SAGA_DOC + _CONSISTENCY_DOC,
    responses={**_RESPONSES, **_NOT_FOUND},
)
async def get_order_timeline(
    order_id: UUID,
    response: Response,
    read_model: ReadModel,
    settings: Settings,
    token: Token,
    caller: CustomerOrRestaurantOrOps,
) -> OrderTimeline:
    order = await _visible_order(order_id, response, read_model, settings, token)
    caller.authorize(
        f"order {order_id}", customer=order.customer_id, restaurant=order.restaurant_id
    )
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
    response: Response,
    read_model: ReadModel,
    settings: Settings,
    token: Token,
    caller: CustomerOrOps,
    customer_id: Annotated[str | None, Query(min_length=1)] = None,
    status: OrderStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> OrderPage:
    if not caller.is_ops:  # a customer lists their own orders only
        if customer_id is not None and customer_id != caller.subject:
            raise Forbidden(f"the orders of customer {customer_id} are not yours")
        customer_id = caller.subject
    return await _order_page(
        response,
        read_model,
        settings,
        token,
        customer_id=customer_id,
        status=status,
        limit=limit,
        cursor=cursor,
    )


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
    response: Response,
    read_model: ReadModel,
    settings: Settings,
    token: Token,
    caller: CustomerOrOps,
    status: OrderStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> OrderPage:
    caller.authorize(f"the orders of consumer {consumer_id}", customer=consumer_id)
    return await _order_page(
        response,
        read_model,
        settings,
        token,
        customer_id=consumer_id,
        status=status,
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/tickets/{order_id}",
    tags=["tickets"],
    summary="One kitchen ticket",
    description="The ticket of an order (a ticket's id is its order's id), as the tickets "
    "projection last applied it.",
    responses={
        404: {"description": "No such ticket (yet)."},
        **_UNAVAILABLE,
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
        **_UNAVAILABLE,
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
    if not caller.is_ops:  # a restaurant lists its own tickets only
        if restaurant_id is not None and restaurant_id != caller.subject:
            raise Forbidden(f"the tickets of restaurant {restaurant_id} are not yours")
        restaurant_id = caller.subject
    after: TicketCursor | None = None
    if cursor:  # an empty cursor is the first page, as a missing one
        try:
            after = TicketCursor.decode(cursor)
        except InvalidCursor:
            raise HTTPException(400, "invalid cursor") from None
    page, following = await tickets.newest_first(
        restaurant_id=restaurant_id, status=status, after=after, limit=limit
    )
    return TicketPage(items=page, next_cursor=following.encode() if following is not None else None)


@router.get(
    "/sagas/stuck",
    tags=["sagas"],
    summary="Orders whose saga has been pending too long",
    description="Orders still `APPROVAL_PENDING` created more than `older_than` seconds "
    "ago, oldest first (at most `limit`), with their saga and timeline: the saga steps "
    "that have not answered show as null. The read model lags behind the services, so a "
    "saga listed here may have moved on already." + _SAGA_DOC,
    responses=_UNAVAILABLE,
)
async def stuck_sagas(
    read_model: ReadModel,
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
