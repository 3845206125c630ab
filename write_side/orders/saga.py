"""The orders service's part in the createOrder saga: end the order when the saga ends.

Run: ``faust -A write_side.orders.saga:app worker --without-web``.
"""

from collections.abc import Callable
from typing import Any
from uuid import UUID

from contracts import accounting, consumers, kitchen
from contracts.envelope import Envelope
from kernel.logs import milestones
from kernel.reactions import Reaction
from kernel.saga import saga_worker
from write_side.orders.application import OrdersApplication
from write_side.orders.bootstrap import build_application
from write_side.orders.settings import OrdersSettings

log = milestones(__name__)


def reactions(app: OrdersApplication) -> list[Reaction]:
    def approve(event: accounting.CardAuthorized, _: Envelope) -> None:
        app.approve_order(UUID(event.order_id))
        log.info(
            "saga ended: order %s approved",
            event.order_id,
            extra={"order_id": event.order_id, "outcome": "approved"},
        )

    def reject(step: str) -> Callable[[Any, Envelope], None]:
        def on_step_failed(event: Any, _: Envelope) -> None:
            app.reject_order(UUID(event.order_id), event.reason, failed_step=step)
            log.info(
                "saga ended: order %s rejected at %s: %s",
                event.order_id,
                step,
                event.reason,
                extra={"order_id": event.order_id, "outcome": "rejected", "failed_step": step},
            )

        return on_step_failed

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
