"""Response models of the query API: the public shape of the read models.

Documents are validated into these models straight from MongoDB. Bookkeeping fields
(``_``-prefixed, e.g. ``_applied``, ``_rev``) are dropped, ``_id`` only fills in
``order_id`` when a document lacks it, and fields that older documents do not have yet
(``saga``, ``timeline``, ``failed_step``) get their empty defaults. A delivery address
that older documents hold as one string (``OrderCreated`` v1) is read as its street.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator


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


class TicketStatus(StrEnum):
    CREATE_PENDING = "CREATE_PENDING"
    REJECTED = "REJECTED"
    AWAITING_ACCEPTANCE = "AWAITING_ACCEPTANCE"
    CANCELLED = "CANCELLED"


class CardAuthorization(StrEnum):
    AUTHORIZED = "AUTHORIZED"
    FAILED = "FAILED"


class SagaStep(StrEnum):
    """The saga participant whose step failed."""

    CONSUMERS = "consumers"
    KITCHEN = "kitchen"
    ACCOUNTING = "accounting"


class ReadModelDocument(BaseModel):
    """Base of the models validated from read-model documents."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _public_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        public = {key: value for key, value in data.items() if not str(key).startswith("_")}
        if public.get("order_id") is None and "_id" in data:
            public["order_id"] = data["_id"]
        return public


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


def _empty_list_if_null(value: Any) -> Any:
    return [] if value is None else value


def _by_time(timeline: list[TimelineEntry]) -> list[TimelineEntry]:
    # The projection appends in arrival order; events of four topics arrive in any
    # order. sorted() is stable: entries with equal times keep their arrival order.
    return sorted(timeline, key=lambda entry: entry.time)


class SagaView(ReadModelDocument):
    """Fields shared by every view of an order's saga."""

    order_id: UUID
    saga: Annotated[Saga, BeforeValidator(_empty_saga_if_null)] = Field(default_factory=Saga)
    timeline: Annotated[
        list[TimelineEntry], BeforeValidator(_empty_list_if_null), AfterValidator(_by_time)
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


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class OrderTimeline(SagaView):
    """An order's saga state and its events."""


class StuckSaga(SagaView):
    """An order still APPROVAL_PENDING longer than asked."""

    created_at: datetime
    age_seconds: float = Field(description="Seconds since created_at, as of `as_of`.")


class StuckSagas(BaseModel):
    as_of: datetime = Field(description="The time the ages were computed against.")
    items: list[StuckSaga] = Field(description="Oldest first.")


class Ticket(ReadModelDocument):
    """One kitchen ticket (its id is its order's id)."""

    order_id: UUID
    restaurant_id: str
    consumer_id: str | None = Field(default=None, description="Null for a rejected ticket.")
    line_items: Annotated[list[LineItem], BeforeValidator(_empty_list_if_null)] = Field(
        default_factory=list, description="Empty for a rejected ticket."
    )
    total_cents: int | None = Field(default=None, description="Null for a rejected ticket.")
    status: TicketStatus
    reason: str | None = None
    version: int = Field(description="Ticket aggregate version of the last applied event.")
    updated_at: datetime = Field(description="Time of the last applied event.")


class TicketPage(BaseModel):
    items: list[Ticket]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


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
    lag_events: int | None = Field(description="Sum of the partitions' lags (null: no broker).")
    lag_seconds: float | None = Field(
        description="Age of the last event applied in the partition furthest behind; "
        "0 when none is behind (null: unknown)."
    )
    partitions: list[ProjectionPartition]
    rebuilds: list[ProjectionRebuild] = Field(description="Rebuilds in progress (`cqrs replay`).")
