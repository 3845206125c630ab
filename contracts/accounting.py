"""Integration events published by the accounting service (topic ``accounting``)."""

from pydantic import Field

from contracts.base import ContractEvent
from contracts.orders import OrderId

TOPIC = "accounting"


class CardAuthorized(ContractEvent):
    name = "accounting.CardAuthorized"
    version = "1.0"

    order_id: OrderId
    consumer_id: str
    amount_cents: int = Field(gt=0)


class CardAuthorizationFailed(ContractEvent):
    """The card was refused (blocked, over the credit limit, no account)."""

    name = "accounting.CardAuthorizationFailed"
    version = "1.0"

    order_id: OrderId
    consumer_id: str
    reason: str


EVENTS: tuple[type[ContractEvent], ...] = (CardAuthorized, CardAuthorizationFailed)
