"""Integration events published by the kitchen service (topic ``kitchen``)."""

from pydantic import Field

from contracts.base import ContractEvent
from contracts.orders import LineItem, OrderId

TOPIC = "kitchen"


class TicketCreated(ContractEvent):
    """A ticket waits for the card (CREATE_PENDING); carries what accounting needs."""

    name = "kitchen.TicketCreated"
    version = "1.0"

    order_id: OrderId
    consumer_id: str
    restaurant_id: str
    line_items: list[LineItem] = Field(min_length=1)
    total_cents: int = Field(gt=0)


class TicketRejected(ContractEvent):
    """No ticket: the restaurant is closed or an item is not on its menu."""

    name = "kitchen.TicketRejected"
    version = "1.0"

    order_id: OrderId
    restaurant_id: str
    reason: str


class TicketApproved(ContractEvent):
    """The card was authorized: the ticket awaits the restaurant's acceptance."""

    name = "kitchen.TicketApproved"
    version = "1.0"

    order_id: OrderId
    restaurant_id: str


class TicketCancelled(ContractEvent):
    """Compensation: the card was refused, so the pending ticket is cancelled."""

    name = "kitchen.TicketCancelled"
    version = "1.0"

    order_id: OrderId
    restaurant_id: str
    reason: str


EVENTS: tuple[type[ContractEvent], ...] = (
    TicketCreated,
    TicketRejected,
    TicketApproved,
    TicketCancelled,
)
