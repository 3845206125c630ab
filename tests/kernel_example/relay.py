"""The tallies relay, for tests that need it in a process of its own:
``python -m tests.kernel_example.relay``."""

from operator import attrgetter

from kernel.application import open_application
from kernel.relay import Relay, aggregate_id, build_relay, contract_mapping, serve_relay
from kernel.settings import RelaySettings
from tests.kernel_example import contracts as contract
from tests.kernel_example.api import TalliesSettings
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.domain import Tally


class TalliesRelaySettings(TalliesSettings, RelaySettings):
    """Environment: TALLIES_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    tallies_relay_also_publish: frozenset[str] = frozenset({"tallies.TallyStarted.v1"})
    """Older majors the relay still publishes beside the current one (a JSON list)."""


to_contract = contract_mapping(
    {
        Tally.Started: contract.TallyStarted,
        Tally.Added: contract.TallyAdded,
        Tally.Closed: contract.TallyClosed,
    },
    computed={"tally_id": aggregate_id, "tally_name": attrgetter("name")},
)


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
