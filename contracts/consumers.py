"""Integration events published by the consumers service (topic ``consumers``)."""

from contracts.base import ContractEvent
from contracts.orders import OrderEvent, OrderPassedOn

TOPIC = "consumers"


class ConsumerVerified(OrderPassedOn, name="consumers.ConsumerVerified", version="1.0"):
    """The consumer may place this order; carries what the kitchen needs next."""


class ConsumerVerificationFailed(
    OrderEvent, name="consumers.ConsumerVerificationFailed", version="1.0"
):
    consumer_id: str
    reason: str


EVENTS: tuple[type[ContractEvent], ...] = (ConsumerVerified, ConsumerVerificationFailed)
