"""Integration events published by the kitchen service (topic ``kitchen``)."""

from enum import StrEnum

from contracts.base import ContractEvent
from contracts.orders import OrderEvent, OrderPassedOn

TOPIC = "kitchen"


class TicketCreated(OrderPassedOn, name="kitchen.TicketCreated", version="1.0"):
    """A ticket waits for the card (CREATE_PENDING); carries what accounting needs."""


class TicketRejected(OrderEvent, name="kitchen.TicketRejected", version="1.0"):
    """No ticket: the restaurant is closed or an item is not on its menu."""

    restaurant_id: str
    reason: str


class TicketApproved(OrderEvent, name="kitchen.TicketApproved", version="1.0"):
    """The card was authorized: the ticket awaits the restaurant's acceptance."""

    restaurant_id: str


class TicketCancelled(OrderEvent, name="kitchen.TicketCancelled", version="1.0"):
    """Compensation: the card was refused, so the pending ticket is cancelled."""

    restaurant_id: str
    reason: str


class TicketStatus(StrEnum):
    """Where a ticket stands after each event: the kitchen's and the orders' read models
    show it."""

    CREATE_PENDING = "CREATE_PENDING"  # TicketCreated: it waits for the card
    REJECTED = "REJECTED"  # TicketRejected
    AWAITING_ACCEPTANCE = "AWAITING_ACCEPTANCE"  # TicketApproved
    CANCELLED = "CANCELLED"  # TicketCancelled


EVENTS: tuple[type[ContractEvent], ...] = (
    TicketCreated,
    TicketRejected,
    TicketApproved,
    TicketCancelled,
)
