"""The kitchen Application: each command is get → mutate → save, nothing else.

The restaurants' commands serve the command API; the tickets' serve the saga: called by
a reaction, their save joins the batch that records the consumed message's position
(kernel.reactions).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from kernel.application import ServiceApplication
from kernel.errors import DomainError, NotFound
from kernel.group_commit import command
from write_side.kitchen.domain import Restaurant, Ticket, restaurant_uuid


@dataclass(frozen=True)
class Saved:
    """What a restaurant command returns: the new version and its log position.

    ``position`` is None when the command changed nothing (the restaurant was already
    open, already closed, or already had that menu).
    """

    restaurant_id: str
    version: int
    position: int | None


class KitchenApplication(ServiceApplication):
    name = "kitchen"  # table names: kitchen_events, kitchen_tracking

    # Restaurants (HTTP commands)

    @command
    def register_restaurant(self, restaurant_id: str, name: str, menu: list[str]) -> Saved:
        """Register an open restaurant; registering an existing id is a DomainError (409)."""
        if restaurant_uuid(restaurant_id) in self.repository:
            raise DomainError(f"restaurant {restaurant_id} is already registered")
        # If another command registers it in between, the save collides (IntegrityError).
        return self._save(Restaurant(restaurant_id, name, menu))

    @command
    def open_restaurant(self, restaurant_id: str) -> Saved:
        restaurant = self.get_restaurant(restaurant_id)
        restaurant.open()
        return self._save(restaurant)

    @command
    def close_restaurant(self, restaurant_id: str) -> Saved:
        restaurant = self.get_restaurant(restaurant_id)
        restaurant.close()
        return self._save(restaurant)

    @command
    def set_menu(self, restaurant_id: str, menu: Iterable[str]) -> Saved:
        restaurant = self.get_restaurant(restaurant_id)
        restaurant.set_menu(menu)
        return self._save(restaurant)

    def get_restaurant(self, restaurant_id: str) -> Restaurant:
        missing = f"restaurant {restaurant_id} not found"
        return self.load(Restaurant, restaurant_uuid(restaurant_id), missing)

    def get_ticket(self, order_id: UUID) -> Ticket:
        return self.load(Ticket, order_id, f"ticket for order {order_id} not found")

    # Tickets (the saga's commands)

    @command
    def create_ticket(
        self,
        order_id: UUID,
        restaurant_id: str,
        consumer_id: str,
        line_items: Sequence[Mapping[str, Any]],
        total_cents: int,
    ) -> None:
        """A CREATE_PENDING ticket if the restaurant can make the order, else a REJECTED
        one with the reason; nothing if the order already has a ticket."""
        if order_id in self.repository:
            return  # a re-published message: the ticket was made the first time
        try:
            refusal = self.get_restaurant(restaurant_id).refusal_for(line_items)
        except NotFound:
            refusal = f"unknown restaurant {restaurant_id}"
        if refusal is not None:
            ticket = Ticket.reject(order_id, restaurant_id, refusal)
        else:
            ticket = Ticket.create(order_id, restaurant_id, consumer_id, line_items, total_cents)
        self.save(ticket)

    @command
    def reject_ticket(self, order_id: UUID, restaurant_id: str, reason: str) -> None:
        """A REJECTED ticket (creating the ticket failed); nothing if one exists."""
        if order_id in self.repository:
            return
        self.save(Ticket.reject(order_id, restaurant_id, reason))

    @command
    def approve_ticket(self, order_id: UUID) -> None:
        """CREATE_PENDING → AWAITING_ACCEPTANCE (no new event if already there).

        A missing ticket is NotFound. In the saga it cannot happen: accounting
        authorizes the card only after it has read this ticket's TicketCreated.
        """
        ticket = self.get_ticket(order_id)
        ticket.approve()
        self.save(ticket)

    @command
    def cancel_ticket(self, order_id: UUID, reason: str) -> None:
        """CREATE_PENDING → CANCELLED, the compensation (no new event if already there).

        A missing ticket is NotFound, as for :meth:`approve_ticket`.
        """
        ticket = self.get_ticket(order_id)
        ticket.cancel(reason)
        self.save(ticket)

    def _save(self, restaurant: Restaurant) -> Saved:
        recordings = self.save(restaurant)
        position = recordings[-1].notification.id if recordings else None
        return Saved(restaurant.restaurant_id, restaurant.version, position)
