"""Integration events published by the consumers service (topic ``consumers``)."""

from pydantic import Field

from contracts.base import ContractEvent
from contracts.orders import LineItem, OrderId

TOPIC = "consumers"


class ConsumerVerified(ContractEvent):
    """The consumer may place this order; carries what the kitchen needs next."""

    name = "consumers.ConsumerVerified"
    version = "1.0"

    order_id: OrderId
    consumer_id: str
    restaurant_id: str
    line_items: list[LineItem] = Field(min_length=1)
    total_cents: int = Field(gt=0)


class ConsumerVerificationFailed(ContractEvent):
    name = "consumers.ConsumerVerificationFailed"
    version = "1.0"

    order_id: OrderId
    consumer_id: str
    reason: str


EVENTS: tuple[type[ContractEvent], ...] = (ConsumerVerified, ConsumerVerificationFailed)
