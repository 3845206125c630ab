"""The ``orders`` read model: one document per order, with its saga and timeline.

Fed by all four services' topics. Events of one order arrive from four topics in any
order, so every event may find no document yet; only ``OrderCreated`` fills in the
order itself (and ``created_position``, without which the query API does not show
the document). Field meanings: docs/read-models.md.
"""

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from contracts import accounting, consumers, kitchen
from contracts import orders as contract
from contracts.envelope import Envelope
from kernel.projection import Document, Projection

EMPTY_SAGA: dict[str, str | None] = {
    "state": None,
    "consumer_verification": None,
    "ticket": None,
    "card_authorization": None,
    "failed_step": None,
    "reason": None,
}


def order_of(_: Envelope, event: Any) -> str:
    """Every saga event names its order: that is the document it belongs to."""
    order_id: str = event.order_id
    return order_id


def apply(document: Document | None, envelope: Envelope, event: object) -> Document:
    order_id = order_of(envelope, event)
    new: Document = dict(document) if document else {"_id": order_id, "order_id": order_id}
    saga = {**EMPTY_SAGA, **new.get("saga", {})}
    detail: str | None = None

    if isinstance(event, contract.OrderCreated):
        new.update(
            customer_id=event.customer_id,
            restaurant_id=event.restaurant_id,
            delivery_address=event.delivery_address.model_dump(),
            line_items=[item.model_dump() for item in event.line_items],
            total_cents=event.total_cents,
            status="APPROVAL_PENDING",
            rejection_reason=None,
            failed_step=None,
            cancellation_reason=None,
            created_position=envelope.sequence,
            created_at=envelope.time,
        )
        saga["state"] = saga["state"] or "PENDING"
    elif isinstance(event, contract.OrderApproved):
        new["status"] = saga["state"] = "APPROVED"
    elif isinstance(event, contract.OrderRejected):
        new.update(status="REJECTED", rejection_reason=event.reason, failed_step=event.failed_step)
        saga.update(state="REJECTED", failed_step=event.failed_step, reason=event.reason)
        detail = f"{event.failed_step}: {event.reason}"
    elif isinstance(event, contract.OrderCancelled):
        new.update(status="CANCELLED", cancellation_reason=event.reason)
        detail = event.reason
    elif isinstance(event, consumers.ConsumerVerified):
        saga["consumer_verification"] = "VERIFIED"
    elif isinstance(event, consumers.ConsumerVerificationFailed):
        saga["consumer_verification"] = "FAILED"
        detail = _failed(saga, "consumers", event.reason)
    elif isinstance(event, kitchen.TicketCreated):
        saga["ticket"] = kitchen.TicketStatus.CREATE_PENDING
    elif isinstance(event, kitchen.TicketRejected):
        saga["ticket"] = kitchen.TicketStatus.REJECTED
        detail = _failed(saga, "kitchen", event.reason)
    elif isinstance(event, kitchen.TicketApproved):
        saga["ticket"] = kitchen.TicketStatus.AWAITING_ACCEPTANCE
    elif isinstance(event, kitchen.TicketCancelled):
        saga["ticket"] = kitchen.TicketStatus.CANCELLED
        detail = event.reason
    elif isinstance(event, accounting.CardAuthorized):
        saga["card_authorization"] = "AUTHORIZED"
        detail = f"{event.amount_cents} cents"
    elif isinstance(event, accounting.CardAuthorizationFailed):
        saga["card_authorization"] = "FAILED"
        detail = _failed(saga, "accounting", event.reason)

    if envelope.source == "orders":  # the order aggregate's own progress
        new.update(
            version=envelope.aggregateversion,
            position=envelope.sequence,
            updated_at=envelope.time,
        )
    new["saga"] = saga
    new["timeline"] = sorted(
        [
            *new.get("timeline", []),
            {
                "service": envelope.source,
                "event": envelope.type,
                "time": envelope.time,
                "event_id": envelope.id,
                "detail": detail,
            },
        ],
        key=_timeline_order,
    )
    return new


def _timeline_order(entry: Document) -> tuple[datetime, str]:
    """Time, then event id: the same timeline whatever order the four topics arrive in.

    Compared as MongoDB stores it (UTC, milliseconds), so an entry sorts the same
    before and after a round trip through the database.
    """
    time: datetime = entry["time"]
    if time.tzinfo is not None:
        time = time.astimezone(UTC).replace(tzinfo=None)
    return time.replace(microsecond=time.microsecond // 1000 * 1000), entry["event_id"]


def _failed(saga: dict[str, str | None], step: str, reason: str) -> str:
    saga["failed_step"] = saga["failed_step"] or step
    saga["reason"] = saga["reason"] or reason
    return reason


ORDERS = Projection(
    name="orders",
    topics=(contract.TOPIC, consumers.TOPIC, kitchen.TOPIC, accounting.TOPIC),
    collection="orders",
    version=2,  # 2: the timeline is sorted by (time, event id), not in arrival order
    accepts=(*contract.EVENTS, *consumers.EVENTS, *kitchen.EVENTS, *accounting.EVENTS),
    apply=apply,
    key=order_of,
    indexes=[
        IndexModel([("customer_id", ASCENDING), ("created_position", DESCENDING)]),
        IndexModel([("status", ASCENDING), ("created_position", DESCENDING)]),
        IndexModel([("created_position", DESCENDING)]),
        IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
    ],
)
