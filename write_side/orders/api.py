"""The orders command API (one process): ``uvicorn write_side.orders.api:create_app --factory``."""

from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Discriminator, Field, Tag

from contracts.consistency import ConsistencyToken
from kernel.api import (
    Id,
    Strict,
    command_api,
)
from kernel.auth import CustomerOrOps, CustomerOrRestaurantOrOps
from kernel.metrics import saga_started
from write_side.orders.application import OrdersApplication, Saved
from write_side.orders.bootstrap import build_application
from write_side.orders.settings import OrdersSettings


class LineItemIn(Strict):
    menu_item_id: Id
    quantity: int = Field(gt=0, le=1000)
    unit_price_cents: int = Field(gt=0, le=10_000_000)


class DeliveryAddressIn(Strict):
    street: str = Field(min_length=1, max_length=200, description="Street and number.")
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code.")


LegacyAddress = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        description="Deprecated: the address as one line of text, kept as its street "
        "only. Send the structured form.",
    ),
]


def _address_form(value: object) -> str:
    return "text" if isinstance(value, str) else "structured"


Address = Annotated[
    Annotated[DeliveryAddressIn, Tag("structured")] | Annotated[LegacyAddress, Tag("text")],
    Discriminator(_address_form),
]
"""The structured address; one line of text is still accepted (see docs/adr/0011)."""


class PlaceOrder(Strict):
    customer_id: Id
    restaurant_id: Id
    delivery_address: Address
    line_items: list[LineItemIn] = Field(min_length=1, max_length=50)

    def address(self) -> dict[str, str | None]:
        if isinstance(self.delivery_address, str):
            return {"street": self.delivery_address}
        return self.delivery_address.model_dump()


class DeliveryAddressOut(BaseModel):
    street: str
    city: str | None
    postal_code: str | None
    country: str | None


class CancelOrder(Strict):
    reason: str = Field(min_length=1, max_length=500)


class CommandAccepted(BaseModel):
    order_id: UUID
    version: int
    position: int = Field(description="The event's position in the orders service's log.")
    consistency_token: str = Field(
        description="Send it as X-Consistency-Token to the query API to read your write."
    )

    @classmethod
    def of(cls, saved: Saved) -> "CommandAccepted":
        token = ConsistencyToken("orders", saved.position, str(saved.order_id), saved.version)
        return cls(
            order_id=saved.order_id,
            version=saved.version,
            position=saved.position,
            consistency_token=str(token),
        )


class OrderOut(BaseModel):
    order_id: UUID
    version: int
    state: str
    customer_id: str
    restaurant_id: str
    delivery_address: DeliveryAddressOut
    line_items: list[LineItemIn]
    total_cents: int
    rejection_reason: str | None
    cancellation_reason: str | None


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    settings = settings or OrdersSettings()
    api, orders = command_api("orders", lambda: build_application(settings))

    Orders = Annotated[OrdersApplication, Depends(orders)]

    @api.post("/orders", status_code=201)
    def place_order(body: PlaceOrder, app: Orders, caller: CustomerOrOps) -> CommandAccepted:
        """A customer places their own orders (customer_id is their id); ops any."""
        caller.authorize(f"customer {body.customer_id}", customer=body.customer_id)
        saved = app.place_order(
            customer_id=body.customer_id,
            restaurant_id=body.restaurant_id,
            delivery_address=body.address(),
            line_items=[item.model_dump() for item in body.line_items],
        )
        saga_started("createOrder")
        return CommandAccepted.of(saved)

    @api.post("/orders/{order_id}/cancel")
    def cancel_order(
        order_id: UUID, body: CancelOrder, app: Orders, caller: CustomerOrOps
    ) -> CommandAccepted:
        """The order's customer, or ops."""
        order = app.get_order(order_id)
        caller.authorize(f"order {order_id}", customer=order.customer_id)
        saved = app.cancel_order(order_id, body.reason)
        return CommandAccepted.of(saved)

    @api.get("/orders/{order_id}")
    def get_order(order_id: UUID, app: Orders, caller: CustomerOrRestaurantOrOps) -> OrderOut:
        """The order as the write model holds it now (the query API serves the read model).

        Its customer, its restaurant, or ops."""
        order = app.get_order(order_id)
        caller.authorize(
            f"order {order_id}", customer=order.customer_id, restaurant=order.restaurant_id
        )
        return OrderOut(
            order_id=order.id,
            version=order.version,
            state=order.state.value,
            customer_id=order.customer_id,
            restaurant_id=order.restaurant_id,
            delivery_address=DeliveryAddressOut(**vars(order.delivery_address)),
            line_items=[LineItemIn(**vars(item)) for item in order.line_items],
            total_cents=order.total_cents,
            rejection_reason=order.rejection_reason,
            cancellation_reason=order.cancellation_reason,
        )

    return api
