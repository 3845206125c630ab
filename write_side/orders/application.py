"""The orders Application: each command is get → mutate → save, nothing else."""

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import JSONTranscoder, Transcoding

from kernel.application import ServiceApplication
from kernel.group_commit import command
from write_side.orders.domain import DeliveryAddress, LineItem, Order, OrderState


@dataclass(frozen=True)
class Saved:
    """What a command returns: the aggregate's new version and its log position."""

    order_id: UUID
    version: int
    position: int


class OrdersApplication(ServiceApplication):
    name = "orders"  # table names: orders_events, orders_tracking

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        """The Order's value objects, for its snapshots (``IS_SNAPSHOTTING_ENABLED=y``)."""
        super().register_transcodings(transcoder)
        transcoder.register(_DataclassAsDict(LineItem, "order_line_item"))
        transcoder.register(_DataclassAsDict(DeliveryAddress, "order_delivery_address"))
        transcoder.register(_OrderStateAsName())

    @command
    def place_order(
        self,
        customer_id: str,
        restaurant_id: str,
        delivery_address: dict[str, Any],
        line_items: list[dict[str, Any]],
    ) -> Saved:
        order = Order(customer_id, restaurant_id, delivery_address, line_items)
        return self._save(order)

    @command
    def cancel_order(self, order_id: UUID, reason: str) -> Saved:
        order = self.get_order(order_id)
        order.cancel(reason)
        return self._save(order)

    @command
    def approve_order(self, order_id: UUID) -> datetime | None:
        """When the order was placed if this ended its saga (None: it had ended)."""
        order = self.get_order(order_id)
        ends = order.state is OrderState.APPROVAL_PENDING
        order.approve()
        self.save(order)
        return order.created_on if ends else None

    @command
    def reject_order(self, order_id: UUID, reason: str, failed_step: str) -> datetime | None:
        """When the order was placed if this ended its saga (None: it had ended)."""
        order = self.get_order(order_id)
        ends = order.state is OrderState.APPROVAL_PENDING
        order.reject(reason, failed_step)
        self.save(order)
        return order.created_on if ends else None

    def get_order(self, order_id: UUID) -> Order:
        return self.load(Order, order_id, f"order {order_id} not found")

    def _save(self, order: Order) -> Saved:
        recordings = self.save(order)
        return Saved(order.id, order.version, recordings[-1].notification.id)


class _DataclassAsDict(Transcoding):
    def __init__(self, type_: type, name: str):
        self.type = type_
        self.name = name

    def encode(self, obj: Any) -> dict[str, Any]:
        return asdict(obj)

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


class _OrderStateAsName(Transcoding):
    type = OrderState
    name = "order_state"

    def encode(self, obj: OrderState) -> str:
        return obj.name

    def decode(self, data: str) -> OrderState:
        return OrderState[data]
