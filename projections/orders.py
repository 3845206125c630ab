"""The ``orders`` read model: one document per order, with its current status."""

from pymongo import DESCENDING, IndexModel

from contracts import orders as contract
from contracts.envelope import Envelope
from projections.projection import Document, Projection, ProjectionError


def apply(document: Document | None, envelope: Envelope, event: object) -> Document:
    if isinstance(event, contract.OrderCreated):
        return {
            "_id": event.order_id,
            "order_id": event.order_id,
            "customer_id": event.customer_id,
            "restaurant_id": event.restaurant_id,
            "delivery_address": event.delivery_address,
            "line_items": [item.model_dump() for item in event.line_items],
            "total_cents": event.total_cents,
            "status": "APPROVAL_PENDING",
            "rejection_reason": None,
            "cancellation_reason": None,
            "created_position": envelope.sequence,
            "created_at": envelope.time,
        }
    if document is None:
        raise ProjectionError(
            f"{envelope.type} for order {envelope.subject} that was never created"
        )
    if isinstance(event, contract.OrderApproved):
        return {**document, "status": "APPROVED"}
    if isinstance(event, contract.OrderRejected):
        return {**document, "status": "REJECTED", "rejection_reason": event.reason}
    if isinstance(event, contract.OrderCancelled):
        return {**document, "status": "CANCELLED", "cancellation_reason": event.reason}
    raise ProjectionError(f"the orders projection does not handle {envelope.type}")


ORDERS = Projection(
    name="orders",
    topic=contract.TOPIC,
    collection="orders",
    accepts=contract.EVENTS,
    apply=apply,
    indexes=[
        IndexModel([("customer_id", 1), ("created_position", DESCENDING)]),
        IndexModel([("status", 1), ("created_position", DESCENDING)]),
        IndexModel([("created_position", DESCENDING)]),
    ],
)
