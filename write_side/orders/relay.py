"""The orders relay process: ``python -m write_side.orders.relay``."""

from typing import Any

from eventsourcing.domain import DomainEventProtocol

from contracts import orders as contract
from contracts.base import ContractEvent
from kernel.relay import serve_relay
from write_side.orders.bootstrap import build_application
from write_side.orders.domain import Order
from write_side.orders.settings import OrdersSettings


def to_contract(event: DomainEventProtocol[Any]) -> ContractEvent | None:
    """Map a private domain event to its public contract event."""
    order_id = str(event.originator_id)
    if isinstance(event, Order.Placed):
        items = [contract.LineItem(**item) for item in event.line_items]
        return contract.OrderCreated(
            order_id=order_id,
            customer_id=event.customer_id,
            restaurant_id=event.restaurant_id,
            delivery_address=contract.DeliveryAddress(**event.delivery_address),
            line_items=items,
            total_cents=sum(item.quantity * item.unit_price_cents for item in items),
        )
    if isinstance(event, Order.Approved):
        return contract.OrderApproved(order_id=order_id)
    if isinstance(event, Order.Rejected):
        return contract.OrderRejected(
            order_id=order_id, reason=event.reason, failed_step=event.failed_step
        )
    if isinstance(event, Order.Cancelled):
        return contract.OrderCancelled(order_id=order_id, reason=event.reason)
    raise TypeError(f"no contract mapping for domain event {type(event).__qualname__}")


if __name__ == "__main__":
    settings = OrdersSettings()
    serve_relay(
        build_application(settings),
        settings,
        topic=contract.TOPIC,
        to_contract=to_contract,
        also_publish=settings.orders_relay_also_publish,
    )
