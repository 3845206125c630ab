"""The Order aggregate. Plain Python: no infrastructure, testable without a server."""

from dataclasses import dataclass
from enum import Enum
from typing import Any

from eventsourcing.domain import Aggregate, event

from kernel.errors import DomainError


class OrderState(Enum):
    APPROVAL_PENDING = "APPROVAL_PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class LineItem:
    menu_item_id: str
    quantity: int
    unit_price_cents: int

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise DomainError(f"quantity of {self.menu_item_id} must be positive")
        if self.unit_price_cents <= 0:
            raise DomainError(f"price of {self.menu_item_id} must be positive")

    @property
    def total_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True)
class DeliveryAddress:
    """Where the order goes. Orders placed before addresses were structured hold their
    whole free text in ``street`` and nothing else."""

    street: str
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None

    def __post_init__(self) -> None:
        if not self.street.strip():
            raise DomainError("a delivery address needs a street")


class Order(Aggregate):
    """An order placed by a consumer at a restaurant.

    It starts APPROVAL_PENDING while the createOrder saga checks the consumer, the
    kitchen and the card; it ends APPROVED or REJECTED. While the saga runs the order
    is locked (a semantic lock): it can be cancelled only once APPROVED.

    Version 2 structured the delivery address (it was one string): events and
    snapshots stored before are upcast as they are read.
    """

    class_version = 2  # of the snapshots' state

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["delivery_address"] = DeliveryAddress(street=state["delivery_address"])

    class Placed(Aggregate.Created):
        class_version = 2

        customer_id: str
        restaurant_id: str
        delivery_address: dict[str, Any]
        line_items: list[dict[str, Any]]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["delivery_address"] = {"street": state["delivery_address"]}

    class Approved(Aggregate.Event):
        pass

    class Rejected(Aggregate.Event):
        reason: str
        failed_step: str

    class Cancelled(Aggregate.Event):
        reason: str

    @event(Placed)
    def __init__(
        self,
        customer_id: str,
        restaurant_id: str,
        delivery_address: dict[str, Any],
        line_items: list[dict[str, Any]],
    ) -> None:
        if not line_items:
            raise DomainError("an order needs at least one line item")
        self.customer_id = customer_id
        self.restaurant_id = restaurant_id
        self.delivery_address = DeliveryAddress(**delivery_address)
        self.line_items = [LineItem(**item) for item in line_items]
        self.state = OrderState.APPROVAL_PENDING
        self.rejection_reason: str | None = None
        self.failed_step: str | None = None
        self.cancellation_reason: str | None = None

    @property
    def total_cents(self) -> int:
        return sum(item.total_cents for item in self.line_items)

    def approve(self) -> None:
        if self.state is OrderState.APPROVED:
            return  # already done: the saga's message came twice
        self._require(OrderState.APPROVAL_PENDING, "approve")
        self._approved()

    def reject(self, reason: str, failed_step: str) -> None:
        if self.state is OrderState.REJECTED:
            return  # already done: the saga's message came twice
        self._require(OrderState.APPROVAL_PENDING, "reject")
        self._rejected(reason, failed_step)

    def cancel(self, reason: str) -> None:
        if self.state is OrderState.APPROVAL_PENDING:
            raise DomainError(
                "the createOrder saga is still in progress for this order; "
                "cancel it once it is approved"
            )
        self._require(OrderState.APPROVED, "cancel")
        self._cancelled(reason)

    @event(Approved)
    def _approved(self) -> None:
        self.state = OrderState.APPROVED

    @event(Rejected)
    def _rejected(self, reason: str, failed_step: str) -> None:
        self.state = OrderState.REJECTED
        self.rejection_reason = reason
        self.failed_step = failed_step

    @event(Cancelled)
    def _cancelled(self, reason: str) -> None:
        self.state = OrderState.CANCELLED
        self.cancellation_reason = reason

    def _require(self, allowed: OrderState | tuple[OrderState, ...], command: str) -> None:
        allowed_states = allowed if isinstance(allowed, tuple) else (allowed,)
        if self.state not in allowed_states:
            raise DomainError(f"cannot {command} an order that is {self.state.value}")
