"""The kitchen's part in the createOrder saga.

- ``consumers.ConsumerVerified`` → a ticket: CREATE_PENDING (TicketCreated) or
  REJECTED with the reason (TicketRejected). If making it fails for any other reason,
  a REJECTED ticket holds the error, so the saga still ends.
- ``accounting.CardAuthorized`` → the ticket awaits the restaurant's acceptance
  (TicketApproved).
- ``accounting.CardAuthorizationFailed`` → the ticket is cancelled (TicketCancelled):
  the compensation.

Accounting reacts to TicketCreated only, so a card event always finds its ticket; if
one does not (or finds it in a state that forbids the move), the message is
dead-lettered with the error: there is no failure event to publish instead.

Run: ``faust -A write_side.kitchen.saga:app worker --without-web``.
"""

from uuid import UUID

from contracts import accounting, consumers
from contracts.envelope import Envelope
from kernel.reactions import Reaction
from kernel.saga import saga_worker
from write_side.kitchen.application import KitchenApplication
from write_side.kitchen.bootstrap import build_application


def create_ticket(app: KitchenApplication, event: consumers.ConsumerVerified, _: Envelope) -> None:
    app.create_ticket(
        order_id=UUID(event.order_id),
        restaurant_id=event.restaurant_id,
        consumer_id=event.consumer_id,
        line_items=[item.model_dump() for item in event.line_items],
        total_cents=event.total_cents,
    )


def reject_ticket(
    app: KitchenApplication, event: consumers.ConsumerVerified, _: Envelope, error: str
) -> None:
    reason = f"the kitchen could not create the ticket: {error}"
    app.reject_ticket(UUID(event.order_id), event.restaurant_id, reason)


def approve_ticket(app: KitchenApplication, event: accounting.CardAuthorized, _: Envelope) -> None:
    app.approve_ticket(UUID(event.order_id))


def cancel_ticket(
    app: KitchenApplication, event: accounting.CardAuthorizationFailed, _: Envelope
) -> None:
    app.cancel_ticket(UUID(event.order_id), event.reason)


REACTIONS = (
    Reaction(consumers.ConsumerVerified, create_ticket, on_failure=reject_ticket),
    Reaction(accounting.CardAuthorized, approve_ticket),
    Reaction(accounting.CardAuthorizationFailed, cancel_ticket),
)

app = saga_worker("kitchen", build_application, REACTIONS)
