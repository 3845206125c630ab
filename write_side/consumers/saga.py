"""The consumers service's part in the createOrder saga: verify the consumer of each order.

Run: ``faust -A write_side.consumers.saga:app worker --without-web``.
"""

from contracts import orders
from contracts.envelope import Envelope
from kernel.reactions import Reaction
from kernel.saga import saga_worker
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.bootstrap import build_application


def verify(app: ConsumersApplication, event: orders.OrderCreated, _: Envelope) -> None:
    app.verify(
        order_id=event.order_id,
        consumer_id=event.customer_id,
        restaurant_id=event.restaurant_id,
        line_items=[item.model_dump() for item in event.line_items],
        total_cents=event.total_cents,
    )


def fail(app: ConsumersApplication, event: orders.OrderCreated, _: Envelope, reason: str) -> None:
    # The contract's OrderId is a UUID: the failed Verification can be keyed by it.
    app.fail_verification(event.order_id, event.customer_id, reason)


REACTIONS = (Reaction(orders.OrderCreated, verify, on_failure=fail),)

app = saga_worker("consumers", build_application, REACTIONS)
