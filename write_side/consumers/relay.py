"""The consumers relay process: ``python -m write_side.consumers.relay``."""

from typing import Any

from eventsourcing.domain import DomainEventProtocol

from contracts import consumers as contract
from contracts.base import ContractEvent
from contracts.orders import LineItem
from kernel.relay import serve_relay
from write_side.consumers.bootstrap import build_application
from write_side.consumers.domain import Consumer, Verification
from write_side.consumers.settings import ConsumersSettings

_PRIVATE = (Consumer.Registered, Consumer.Deactivated, Consumer.Reactivated)


def to_contract(event: DomainEventProtocol[Any]) -> ContractEvent | None:
    """Map a private domain event to its public contract event (None: stays private)."""
    if isinstance(event, Verification.Verified):
        return contract.ConsumerVerified(
            order_id=event.order_id,
            consumer_id=event.consumer_id,
            restaurant_id=event.restaurant_id,
            line_items=[LineItem(**item) for item in event.line_items],
            total_cents=event.total_cents,
        )
    if isinstance(event, Verification.Failed):
        return contract.ConsumerVerificationFailed(
            order_id=event.order_id, consumer_id=event.consumer_id, reason=event.reason
        )
    if isinstance(event, _PRIVATE):
        return None
    raise TypeError(f"no contract mapping for domain event {type(event).__qualname__}")


if __name__ == "__main__":
    settings = ConsumersSettings()
    serve_relay(
        build_application(settings), settings, topic=contract.TOPIC, to_contract=to_contract
    )
