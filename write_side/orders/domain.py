"""The Order aggregate. Plain Python: no infrastructure, testable without a server."""

from dataclasses import dataclass
from enum import Enum
from typing import Any

from eventsourcing.domain import Aggregate, event

from write_side.kernel.errors import DomainError


class OrderState(str, Enum):
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


class Order(Aggregate):
    """An order placed by a consumer at a restaurant.

    It starts APPROVAL_PENDING while the createOrder saga checks the consumer, the
    kitchen and the card; it ends APPROVED or REJECTED. While the saga runs the order
    is locked (a semantic lock): it can be cancelled only once APPROVED.
    """

    class Placed(Aggregate.Created):
        customer_id: str
        restaurant_id: str
        delivery_address: str
        line_items: list[dict[str, Any]]

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
        delivery_address: str,
        line_items: list[dict[str, Any]],
    ) -> None:
        if not line_items:
            raise DomainError("an order needs at least one line item")
        self.customer_id = customer_id
        self.restaurant_id = restaurant_id
        self.delivery_address = delivery_address
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
