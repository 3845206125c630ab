"""The orders service's part in the createOrder saga: end the order when the saga ends.

Run: ``faust -A write_side.orders.saga:app worker --without-web``.
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from contracts import accounting, consumers, kitchen
from contracts.envelope import Envelope
from kernel.reactions import Reaction
from kernel.saga import saga_worker
from write_side.orders.application import OrdersApplication
from write_side.orders.bootstrap import build_application
from write_side.orders.domain import Order
from write_side.orders.settings import OrdersSettings


def reactions(app: OrdersApplication) -> list[Reaction]:
    def approve(event: accounting.CardAuthorized, _: Envelope) -> Sequence[Order]:
        order = app.get_order(UUID(event.order_id))
        order.approve()
        return [order]

    def reject(step: str) -> Any:
        def handle(event: Any, _: Envelope) -> Sequence[Order]:
            order = app.get_order(UUID(event.order_id))
            order.reject(event.reason, failed_step=step)
            return [order]

        return handle

    return [
        Reaction(accounting.CardAuthorized, approve),
        Reaction(consumers.ConsumerVerificationFailed, reject("consumers")),
        Reaction(kitchen.TicketRejected, reject("kitchen")),
        Reaction(accounting.CardAuthorizationFailed, reject("accounting")),
    ]


app = saga_worker(
    "orders",
    topics=[consumers.TOPIC, kitchen.TOPIC, accounting.TOPIC],
    open_application=lambda: build_application(OrdersSettings()),
    reactions=reactions,
)
