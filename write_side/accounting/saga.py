"""The accounting service's part in the createOrder saga: authorize the card of each ticket.

Run: ``faust -A write_side.accounting.saga:app worker --without-web``.
"""

import logging
from uuid import UUID

from contracts import kitchen
from contracts.envelope import Envelope
from kernel.reactions import Reaction
from kernel.saga import saga_worker
from write_side.accounting.application import AccountingApplication
from write_side.accounting.bootstrap import build_application
from write_side.accounting.settings import AccountingSettings

log = logging.getLogger(__name__)


def reactions(app: AccountingApplication) -> list[Reaction]:
    def authorize(event: kitchen.TicketCreated, _: Envelope) -> None:
        app.authorize(event.order_id, event.consumer_id, event.total_cents)

    def fail(event: kitchen.TicketCreated, _: Envelope, reason: str) -> None:
        if not _is_uuid(event.order_id):
            # No Authorization can be keyed by it, and no order has such an id: record
            # the message as handled rather than block the partition on it.
            log.error("accounting-saga: order id %r is not a UUID; dropped", event.order_id)
            return
        app.fail_authorization(event.order_id, event.consumer_id, reason)

    return [Reaction(kitchen.TicketCreated, authorize, on_failure=fail)]


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


app = saga_worker(
    "accounting",
    topics=[kitchen.TOPIC],
    open_application=lambda: build_application(AccountingSettings()),
    reactions=reactions,
)
