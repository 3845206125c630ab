"""The Restaurant and Ticket aggregates: plain Python, testable without a server."""

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from kernel.errors import DomainError

RESTAURANT_NAMESPACE = UUID("3432fe58-1d8e-42bb-976e-09433654c1eb")
"""Restaurants have string ids ("rest-1"); their aggregate id is derived from it."""


def restaurant_uuid(restaurant_id: str) -> UUID:
    return uuid5(RESTAURANT_NAMESPACE, restaurant_id)


def _checked_menu(menu: Iterable[str]) -> list[str]:
    items = list(menu)
    if not items:
        raise DomainError("a menu needs at least one item")
    if any(not isinstance(item, str) or not item for item in items):
        raise DomainError("menu item ids must be non-empty strings")
    duplicates = sorted({item for item in items if items.count(item) > 1})
    if duplicates:
        raise DomainError(f"menu items listed twice: {', '.join(duplicates)}")
    return items


class Restaurant(Aggregate):
    """A restaurant the kitchen prepares tickets for.

    Its aggregate id derives from its string id, so registering the same restaurant
    twice collides in the store. A restaurant is open as soon as it is registered (it
    keeps the demo short); ``close`` and ``open`` switch it. Opening an open restaurant,
    closing a closed one or setting the menu it already has records nothing.
    """

    class Registered(Aggregate.Created):
        restaurant_id: str
        name: str
        menu: list[str]

    class Opened(Aggregate.Event):
        pass

    class Closed(Aggregate.Event):
        pass

    class MenuChanged(Aggregate.Event):
        menu: list[str]

    @staticmethod
    def create_id(restaurant_id: str) -> UUID:
        return restaurant_uuid(restaurant_id)

    @event(Registered)
    def __init__(self, restaurant_id: str, name: str, menu: list[str]) -> None:
        if not restaurant_id:
            raise DomainError("a restaurant needs an id")
        if not name.strip():
            raise DomainError("a restaurant needs a name")
        self.restaurant_id = restaurant_id
        self.name = name
        self.menu = _checked_menu(menu)
        self.is_open = True

    def open(self) -> None:
        if not self.is_open:
            self._opened()

    def close(self) -> None:
        if self.is_open:
            self._closed()

    def set_menu(self, menu: Iterable[str]) -> None:
        items = _checked_menu(menu)
        if items != self.menu:
            self._menu_changed(items)

    def refusal_for(self, line_items: Iterable[Mapping[str, Any]]) -> str | None:
        """Why this restaurant cannot take these line items now, or None if it can."""
        if not self.is_open:
            return f"restaurant {self.restaurant_id} is closed"
        on_menu = set(self.menu)
        missing: list[str] = []
        for item in line_items:
            menu_item_id = item["menu_item_id"]
            if menu_item_id not in on_menu and menu_item_id not in missing:
                missing.append(menu_item_id)
        if missing:
            return f"not on the menu of {self.restaurant_id}: {', '.join(missing)}"
        return None

    @event(Opened)
    def _opened(self) -> None:
        self.is_open = True

    @event(Closed)
    def _closed(self) -> None:
        self.is_open = False

    @event(MenuChanged)
    def _menu_changed(self, menu: list[str]) -> None:
        self.menu = list(menu)


class TicketState(str, Enum):
    CREATE_PENDING = "CREATE_PENDING"
    AWAITING_ACCEPTANCE = "AWAITING_ACCEPTANCE"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


class Ticket(Aggregate):
    """The kitchen's side of one order; its aggregate id is the order's id.

    A ticket is born CREATE_PENDING (the restaurant can make the order; the card is
    still to be authorized) or REJECTED (it cannot). A second ticket for the same order
    collides with the first in the store. The saga then moves a pending ticket to
    AWAITING_ACCEPTANCE (card authorized) or CANCELLED (card refused: compensation).
    Repeating the move a ticket has already made records nothing (a message came twice).
    """

    class Created(Aggregate.Created):
        """Born CREATE_PENDING."""

        restaurant_id: str
        consumer_id: str
        line_items: list[dict[str, Any]]
        total_cents: int

        def apply(self, aggregate: Any) -> None:
            ticket: Ticket = aggregate
            ticket.restaurant_id = self.restaurant_id
            ticket.consumer_id = self.consumer_id
            ticket.line_items = [dict(item) for item in self.line_items]
            ticket.total_cents = self.total_cents
            ticket.state = TicketState.CREATE_PENDING

    class Rejected(Aggregate.Created):
        """Born REJECTED: the restaurant is unknown or closed, or an item is missing."""

        restaurant_id: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            ticket: Ticket = aggregate
            ticket.restaurant_id = self.restaurant_id
            ticket.state = TicketState.REJECTED
            ticket.reason = self.reason

    # Later events repeat the restaurant, so each maps to its contract event alone.
    class Approved(Aggregate.Event):
        restaurant_id: str

    class Cancelled(Aggregate.Event):
        restaurant_id: str
        reason: str

    def __init__(self) -> None:
        # Called with no arguments when a creation event is replayed; the event's
        # apply() then fills the fields in.
        self.restaurant_id = ""
        self.consumer_id: str | None = None
        self.line_items: list[dict[str, Any]] = []
        self.total_cents = 0
        self.state = TicketState.CREATE_PENDING
        self.reason: str | None = None

    @classmethod
    def create(
        cls,
        order_id: UUID,
        restaurant_id: str,
        consumer_id: str,
        line_items: Sequence[Mapping[str, Any]],
        total_cents: int,
    ) -> "Ticket":
        """A CREATE_PENDING ticket for the order."""
        if not line_items:
            raise DomainError("a ticket needs at least one line item")
        if total_cents <= 0:
            raise DomainError("a ticket's total must be positive")
        return cls._create(
            cls.Created,
            id=order_id,
            restaurant_id=restaurant_id,
            consumer_id=consumer_id,
            line_items=[dict(item) for item in line_items],
            total_cents=total_cents,
        )

    @classmethod
    def reject(cls, order_id: UUID, restaurant_id: str, reason: str) -> "Ticket":
        """A REJECTED ticket: the order's record that the kitchen refused it."""
        if not reason:
            raise DomainError("a rejected ticket needs a reason")
        return cls._create(cls.Rejected, id=order_id, restaurant_id=restaurant_id, reason=reason)

    @property
    def order_id(self) -> UUID:
        order_id: UUID = self.id
        return order_id

    def approve(self) -> None:
        if self.state is TicketState.AWAITING_ACCEPTANCE:
            return  # already done: the saga's message came twice
        self._require(TicketState.CREATE_PENDING, "approve")
        self._approved(self.restaurant_id)

    def cancel(self, reason: str) -> None:
        if self.state is TicketState.CANCELLED:
            return  # already done: the saga's message came twice
        self._require(TicketState.CREATE_PENDING, "cancel")
        self._cancelled(self.restaurant_id, reason)

    @event(Approved)
    def _approved(self, restaurant_id: str) -> None:
        self.state = TicketState.AWAITING_ACCEPTANCE

    @event(Cancelled)
    def _cancelled(self, restaurant_id: str, reason: str) -> None:
        self.state = TicketState.CANCELLED
        self.reason = reason

    def _require(self, allowed: TicketState, command: str) -> None:
        if self.state is not allowed:
            raise DomainError(f"cannot {command} a ticket that is {self.state.value}")
