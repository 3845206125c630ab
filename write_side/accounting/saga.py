"""The accounting service's part in the createOrder saga: authorize the card of each ticket.

Run: ``faust -A write_side.accounting.saga:app worker --without-web``.
"""

from contracts import kitchen
from contracts.envelope import Envelope
from kernel.reactions import Reaction
from kernel.saga import saga_worker
from write_side.accounting.application import AccountingApplication
from write_side.accounting.bootstrap import build_application


def authorize(app: AccountingApplication, event: kitchen.TicketCreated, _: Envelope) -> None:
    app.authorize(event.order_id, event.consumer_id, event.total_cents)


def fail(
    app: AccountingApplication, event: kitchen.TicketCreated, _: Envelope, reason: str
) -> None:
    # The contract's OrderId is a UUID: the failed Authorization can be keyed by it.
    app.fail_authorization(event.order_id, event.consumer_id, reason)


REACTIONS = (Reaction(kitchen.TicketCreated, authorize, on_failure=fail),)

app = saga_worker("accounting", build_application, REACTIONS)
