"""The kitchen relay process: ``python -m write_side.kitchen.relay``."""

from typing import Any

from eventsourcing.domain import DomainEventProtocol

from contracts import kitchen as contract
from contracts.base import ContractEvent
from contracts.orders import LineItem
from kernel.relay import serve_relay
from write_side.kitchen.bootstrap import build_application
from write_side.kitchen.domain import Restaurant, Ticket
from write_side.kitchen.settings import KitchenSettings

PRIVATE_EVENTS = (
    Restaurant.Registered,
    Restaurant.Opened,
    Restaurant.Closed,
    Restaurant.MenuChanged,
)
"""Restaurant events stay inside the kitchen: no other service reads restaurants."""


def to_contract(event: DomainEventProtocol[Any]) -> ContractEvent | None:
    """Map a private domain event to its public contract event (None: not published)."""
    if isinstance(event, PRIVATE_EVENTS):
        return None
    order_id = str(event.originator_id)  # a ticket's id is its order's id
    if isinstance(event, Ticket.Created):
        return contract.TicketCreated(
            order_id=order_id,
            consumer_id=event.consumer_id,
            restaurant_id=event.restaurant_id,
            line_items=[LineItem(**item) for item in event.line_items],
            total_cents=event.total_cents,
        )
    if isinstance(event, Ticket.Rejected):
        return contract.TicketRejected(
            order_id=order_id, restaurant_id=event.restaurant_id, reason=event.reason
        )
    if isinstance(event, Ticket.Approved):
        return contract.TicketApproved(order_id=order_id, restaurant_id=event.restaurant_id)
    if isinstance(event, Ticket.Cancelled):
        return contract.TicketCancelled(
            order_id=order_id, restaurant_id=event.restaurant_id, reason=event.reason
        )
    raise TypeError(f"no contract mapping for domain event {type(event).__qualname__}")


if __name__ == "__main__":
    settings = KitchenSettings()
    serve_relay(
        build_application(settings), settings, topic=contract.TOPIC, to_contract=to_contract
    )
