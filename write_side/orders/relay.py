"""The orders relay process: ``python -m write_side.orders.relay``."""

from contracts import orders as contract
from kernel.relay import aggregate_id, contract_mapping, serve_relay
from write_side.orders.bootstrap import build_application
from write_side.orders.domain import Order
from write_side.orders.settings import OrdersSettings


def total_cents(placed: Order.Placed) -> int:
    """What a placed order costs: the contract carries it, the event has only its items."""
    return sum(item["quantity"] * item["unit_price_cents"] for item in placed.line_items)


to_contract = contract_mapping(
    {
        Order.Placed: contract.OrderCreated,
        Order.Approved: contract.OrderApproved,
        Order.Rejected: contract.OrderRejected,
        Order.Cancelled: contract.OrderCancelled,
    },
    computed={"order_id": aggregate_id, "total_cents": total_cents},
)


if __name__ == "__main__":
    settings = OrdersSettings()
    serve_relay(
        build_application(settings),
        settings,
        topic=contract.TOPIC,
        to_contract=to_contract,
        also_publish=settings.orders_relay_also_publish,
    )
