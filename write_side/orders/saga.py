"""The orders service's part in the createOrder saga: end the order when the saga ends.

Run: ``faust -A write_side.orders.saga:app worker --without-web``.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from contracts import accounting, consumers, kitchen
from contracts.envelope import Envelope
from kernel.reactions import Handler, Reaction, SagaEnded
from kernel.saga import saga_worker
from write_side.orders.application import OrdersApplication
from write_side.orders.bootstrap import build_application


def ended(order_id: str, outcome: str, started: datetime | None, **fields: str) -> SagaEnded | None:
    """If this ended the saga (``started`` is None for a message handled again, the order
    having ended): its end, logged and counted once the step is committed."""
    if started is None:
        return None
    return SagaEnded("createOrder", order_id, outcome, started, fields)


def approve(
    app: OrdersApplication, event: accounting.CardAuthorized, _: Envelope
) -> SagaEnded | None:
    return ended(event.order_id, "approved", app.approve_order(UUID(event.order_id)))


def reject(step: str) -> Handler[OrdersApplication, Any]:
    """The reaction to the failure event of the saga's ``step`` (each has an order_id and
    a reason)."""

    def on_step_failed(app: OrdersApplication, event: Any, _: Envelope) -> SagaEnded | None:
        started = app.reject_order(UUID(event.order_id), event.reason, failed_step=step)
        outcome = f"rejected-{step}"
        return ended(event.order_id, outcome, started, failed_step=step, reason=event.reason)

    return on_step_failed


REACTIONS = (
    Reaction(accounting.CardAuthorized, approve),
    Reaction(consumers.ConsumerVerificationFailed, reject("consumers")),
    Reaction(kitchen.TicketRejected, reject("kitchen")),
    Reaction(accounting.CardAuthorizationFailed, reject("accounting")),
)

app = saga_worker("orders", build_application, REACTIONS)
