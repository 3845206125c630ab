"""Response models of the query API: the public shape of the orders read model."""

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field


class OrderStatus(StrEnum):
    APPROVAL_PENDING = "APPROVAL_PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


class LineItem(BaseModel):
    menu_item_id: str
    quantity: int
    unit_price_cents: int


class Order(BaseModel):
    """One order as the orders projection last saw it."""

    order_id: UUID
    customer_id: str
    restaurant_id: str
    delivery_address: str
    line_items: list[LineItem]
    total_cents: int
    status: OrderStatus
    rejection_reason: str | None = None
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


class ErrorDetail(BaseModel):
    detail: str
