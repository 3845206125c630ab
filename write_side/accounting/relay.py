"""The accounting relay process: ``python -m write_side.accounting.relay``."""

from typing import Any

from eventsourcing.domain import DomainEventProtocol

from contracts import accounting as contract
from contracts.base import ContractEvent
from kernel.relay import serve_relay
from write_side.accounting.bootstrap import build_application
from write_side.accounting.domain import Account, Authorization
from write_side.accounting.settings import AccountingSettings

_PRIVATE = (Account.Opened, Account.CardBlocked, Account.CardUnblocked, Account.Authorized)


def to_contract(event: DomainEventProtocol[Any]) -> ContractEvent | None:
    """Map a private domain event to its public contract event (None: stays private)."""
    if isinstance(event, Authorization.Authorized):
        return contract.CardAuthorized(
            order_id=event.order_id, consumer_id=event.consumer_id, amount_cents=event.amount_cents
        )
    if isinstance(event, Authorization.Failed):
        return contract.CardAuthorizationFailed(
            order_id=event.order_id, consumer_id=event.consumer_id, reason=event.reason
        )
    if isinstance(event, _PRIVATE):
        return None
    raise TypeError(f"no contract mapping for domain event {type(event).__qualname__}")


if __name__ == "__main__":
    settings = AccountingSettings()
    serve_relay(
        build_application(settings), settings, topic=contract.TOPIC, to_contract=to_contract
    )
