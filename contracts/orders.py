"""Integration events published by the orders service (topic ``orders``)."""

from pydantic import Field

from contracts.base import ContractEvent, OrderId

TOPIC = "orders"


class LineItem(ContractEvent):
    name = "orders.LineItem"
    version = "1.0"

    menu_item_id: str
    quantity: int = Field(gt=0)
    unit_price_cents: int = Field(gt=0)


class OrderCreated(ContractEvent):
    name = "orders.OrderCreated"
    version = "1.0"

    order_id: OrderId
    customer_id: str
    restaurant_id: str
    delivery_address: str
    line_items: list[LineItem] = Field(min_length=1)
    total_cents: int = Field(gt=0)


class OrderApproved(ContractEvent):
    name = "orders.OrderApproved"
    version = "1.0"

    order_id: OrderId


class OrderRejected(ContractEvent):
    name = "orders.OrderRejected"
    version = "1.0"

    order_id: OrderId
    reason: str
    failed_step: str = Field(description="consumers, kitchen or accounting")


class OrderCancelled(ContractEvent):
    name = "orders.OrderCancelled"
    version = "1.0"

    order_id: OrderId
    reason: str


EVENTS: tuple[type[ContractEvent], ...] = (
    OrderCreated,
    OrderApproved,
    OrderRejected,
    OrderCancelled,
)
