"""The consumers service's part in the createOrder saga: verify the consumer of each order.

Run: ``faust -A write_side.consumers.saga:app worker --without-web``.
"""

import logging
from uuid import UUID

from contracts import orders
from contracts.envelope import Envelope
from kernel.reactions import Reaction
from kernel.saga import saga_worker
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.bootstrap import build_application
from write_side.consumers.settings import ConsumersSettings

log = logging.getLogger(__name__)


def reactions(app: ConsumersApplication) -> list[Reaction]:
    def verify(event: orders.OrderCreated, _: Envelope) -> None:
        app.verify(
            order_id=event.order_id,
            consumer_id=event.customer_id,
            restaurant_id=event.restaurant_id,
            line_items=[item.model_dump() for item in event.line_items],
            total_cents=event.total_cents,
        )

    def fail(event: orders.OrderCreated, _: Envelope, reason: str) -> None:
        if not _is_uuid(event.order_id):
            # No Verification can be keyed by it, and no order of ours has such an id:
            # record the message as handled rather than block the partition on it.
            log.error("consumers-saga: order id %r is not a UUID; dropped", event.order_id)
            return
        app.fail_verification(event.order_id, event.customer_id, reason)

    return [Reaction(orders.OrderCreated, verify, on_failure=fail)]


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


app = saga_worker(
    "consumers",
    topics=[orders.TOPIC],
    open_application=lambda: build_application(ConsumersSettings()),
    reactions=reactions,
)
