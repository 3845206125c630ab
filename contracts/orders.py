"""Integration events published by the orders service (topic ``orders``)."""

from typing import Annotated

from pydantic import Field

from contracts.base import ContractEvent, ContractModel, Conversion

TOPIC = "orders"

OrderId = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="The order's UUID (lower case, with dashes); saga aggregates use it as id.",
    ),
]


class LineItem(ContractModel):
    menu_item_id: str
    quantity: int = Field(gt=0)
    unit_price_cents: int = Field(gt=0)


class DeliveryAddress(ContractModel):
    """Where the order goes. Only the street is sure to be there: orders placed before
    addresses were structured (OrderCreated v1) carry their whole free text in it."""

    street: str = Field(
        min_length=1, description="Street and number; the whole address for v1 orders."
    )
    city: str | None = None
    postal_code: str | None = None
    country: str | None = Field(
        default=None, description="ISO 3166-1 alpha-2 code, e.g. DE, FR, US."
    )

    def as_text(self) -> str:
        """One line, as v1 carried it: ``street, postal_code city, country``."""
        place = " ".join(part for part in (self.postal_code, self.city) if part)
        return ", ".join(part for part in (self.street, place, self.country) if part)


class OrderEvent(ContractEvent):
    """An event of the createOrder saga, whichever service publishes it: each is about
    one order."""

    order_id: OrderId


class OrderPassedOn(OrderEvent):
    """An event that passes the order on to the saga's next step: who orders what from
    which restaurant, for how much."""

    consumer_id: str
    restaurant_id: str
    line_items: list[LineItem] = Field(min_length=1)
    total_cents: int = Field(gt=0)


class OrderCreated(OrderEvent, name="orders.OrderCreated", version="2.0"):
    customer_id: str
    restaurant_id: str
    delivery_address: DeliveryAddress
    line_items: list[LineItem] = Field(min_length=1)
    total_cents: int = Field(gt=0)


class OrderCreatedV1(OrderEvent, name="orders.OrderCreated", version="1.0"):
    """Superseded by v2 (structured address). Kept so v1 messages stay readable."""

    customer_id: str
    restaurant_id: str
    delivery_address: str
    line_items: list[LineItem] = Field(min_length=1)
    total_cents: int = Field(gt=0)


class OrderApproved(OrderEvent, name="orders.OrderApproved", version="1.0"):
    pass


class OrderRejected(OrderEvent, name="orders.OrderRejected", version="1.0"):
    reason: str
    failed_step: str = Field(description="consumers, kitchen or accounting")


class OrderCancelled(OrderEvent, name="orders.OrderCancelled", version="1.0"):
    reason: str


def _order_created_v1_to_v2(old: OrderCreatedV1) -> OrderCreated:
    # v1's free text has no structure to recover: all of it becomes the street line.
    return OrderCreated(
        **old.model_dump(exclude={"delivery_address"}),
        delivery_address=DeliveryAddress(street=old.delivery_address),
    )


def _order_created_v2_to_v1(new: OrderCreated) -> OrderCreatedV1:
    return OrderCreatedV1(
        **new.model_dump(exclude={"delivery_address"}),
        delivery_address=new.delivery_address.as_text(),
    )


EVENTS: tuple[type[ContractEvent], ...] = (
    OrderCreated,
    OrderApproved,
    OrderRejected,
    OrderCancelled,
)
"""The current version of each event the service publishes."""

SUPERSEDED: tuple[type[ContractEvent], ...] = (OrderCreatedV1,)
"""Older majors: still readable (upcast), still published during their transition."""

UPCASTERS = (Conversion(OrderCreatedV1, OrderCreated, _order_created_v1_to_v2),)
DOWNCASTERS = (Conversion(OrderCreated, OrderCreatedV1, _order_created_v2_to_v1),)
