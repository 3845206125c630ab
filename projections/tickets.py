"""The ``tickets`` read model: the kitchen's tickets, one document per order."""

from pymongo import ASCENDING, DESCENDING, IndexModel

from contracts import kitchen as contract
from contracts.envelope import Envelope
from kernel.projection import Document, Projection, ProjectionError


def apply(document: Document | None, envelope: Envelope, event: object) -> Document:
    new: Document = dict(document) if document else {}
    if isinstance(event, contract.TicketCreated):
        new.update(event.model_dump(), status=contract.TicketStatus.CREATE_PENDING, reason=None)
    elif isinstance(event, contract.TicketRejected):
        new.update(
            event.model_dump(),
            consumer_id=None,
            line_items=[],
            total_cents=None,
            status=contract.TicketStatus.REJECTED,
        )
    elif document is None:
        raise ProjectionError(f"{envelope.type} for ticket {envelope.subject} never created")
    elif isinstance(event, contract.TicketApproved):
        new["status"] = contract.TicketStatus.AWAITING_ACCEPTANCE
    elif isinstance(event, contract.TicketCancelled):
        new.update(status=contract.TicketStatus.CANCELLED, reason=event.reason)
    new.update(version=envelope.aggregateversion, updated_at=envelope.time)
    return new


TICKETS = Projection(
    name="tickets",
    topics=(contract.TOPIC,),
    collection="tickets",
    accepts=contract.EVENTS,
    apply=apply,
    indexes=[
        IndexModel([("restaurant_id", ASCENDING), ("updated_at", DESCENDING)]),
        IndexModel([("status", ASCENDING), ("updated_at", DESCENDING)]),
        IndexModel([("updated_at", DESCENDING)]),
    ],
)
