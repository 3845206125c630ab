"""The tallies relay, for tests that need it in a process of its own:
``python -m tests.kernel_example.relay``."""

from typing import Any

from eventsourcing.domain import DomainEventProtocol

from contracts.base import ContractEvent
from kernel.application import open_application
from kernel.relay import Relay, build_relay, serve_relay
from kernel.settings import RelaySettings
from tests.kernel_example import contracts as contract
from tests.kernel_example.api import TalliesSettings
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.domain import Tally


class TalliesRelaySettings(TalliesSettings, RelaySettings):
    """Environment: TALLIES_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    tallies_relay_also_publish: frozenset[str] = frozenset({"tallies.TallyStarted.v1"})
    """Older majors the relay still publishes beside the current one (a JSON list)."""


def to_contract(event: DomainEventProtocol[Any]) -> ContractEvent | None:
    """Map a private domain event to its public contract event."""
    tally_id = str(event.originator_id)
    if isinstance(event, Tally.Started):
        return contract.TallyStarted(tally_id=tally_id, tally_name=event.name, unit=event.unit)
    if isinstance(event, Tally.Added):
        return contract.TallyAdded(tally_id=tally_id, amount=event.amount)
    if isinstance(event, Tally.Closed):
        return contract.TallyClosed(tally_id=tally_id, reason=event.reason)
    raise TypeError(f"no contract mapping for domain event {type(event).__qualname__}")


def open_tallies(settings: TalliesSettings) -> TalliesApplication:
    return open_application(
        TalliesApplication, settings.tallies_database_url, settings.tallies_database_schema
    )


def tallies_relay(app: TalliesApplication, settings: TalliesRelaySettings) -> Relay:
    """Call it with the tallies' contracts registered (``contracts.registered()``)."""
    return build_relay(
        app,
        settings,
        topic=contract.TOPIC,
        to_contract=to_contract,
        also_publish=settings.tallies_relay_also_publish,
    )


if __name__ == "__main__":
    settings = TalliesRelaySettings()
    with contract.registered():
        serve_relay(
            open_tallies(settings),
            settings,
            topic=contract.TOPIC,
            to_contract=to_contract,
            also_publish=settings.tallies_relay_also_publish,
        )
