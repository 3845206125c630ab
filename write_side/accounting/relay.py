"""The accounting relay process: ``python -m write_side.accounting.relay``."""

import asyncio
import logging
from typing import Any

from eventsourcing.domain import DomainEventProtocol

from contracts import accounting as contract
from contracts.base import ContractEvent
from write_side.accounting.application import AccountingApplication
from write_side.accounting.bootstrap import build_application
from write_side.accounting.domain import Account, Authorization
from write_side.accounting.settings import AccountingSettings
from write_side.kernel.relay import Relay, build_relay, run_relay

SOURCE = "accounting"

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


def accounting_relay(app: AccountingApplication, settings: AccountingSettings) -> Relay:
    return build_relay(app, settings, source=SOURCE, topic=contract.TOPIC, to_contract=to_contract)


async def main() -> None:
    settings = AccountingSettings()
    app = build_application(settings)
    try:
        await run_relay(
            accounting_relay(app, settings),
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_partitions,
        )
    finally:
        app.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
