"""Integration events published by the accounting service (topic ``accounting``)."""

from pydantic import Field

from contracts.base import ContractEvent
from contracts.orders import OrderEvent

TOPIC = "accounting"


class CardAuthorized(OrderEvent, name="accounting.CardAuthorized", version="1.0"):
    consumer_id: str
    amount_cents: int = Field(gt=0)


class CardAuthorizationFailed(OrderEvent, name="accounting.CardAuthorizationFailed", version="1.0"):
    """The card was refused (blocked, over the credit limit, no account)."""

    consumer_id: str
    reason: str


EVENTS: tuple[type[ContractEvent], ...] = (CardAuthorized, CardAuthorizationFailed)
