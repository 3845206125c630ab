"""`cqrs run` runs `RELAY_PROCESSES` relays of each service (docs/adr/0030)."""

import pytest

from devstack.run import add_standby_relays, default_environment

PROCFILE = """shipments-api: exec uvicorn write_side.shipments.api:create_app --factory --port $SHIPMENTS_API_PORT
shipments-relay: exec python -m write_side.shipments.relay
shipments-saga: exec faust -A write_side.shipments.saga:app worker
parcels-relay: exec python -m write_side.parcels.relay
"""


def test_each_relay_gets_standbys_with_the_same_command() -> None:
    lines = add_standby_relays(PROCFILE, {"RELAY_PROCESSES": "3"}).splitlines()
    assert lines == [
        "shipments-api: exec uvicorn write_side.shipments.api:create_app --factory --port $SHIPMENTS_API_PORT",
        "shipments-relay: exec python -m write_side.shipments.relay",
        "shipments-relay-2: exec python -m write_side.shipments.relay",
        "shipments-relay-3: exec python -m write_side.shipments.relay",
        "shipments-saga: exec faust -A write_side.shipments.saga:app worker",
        "parcels-relay: exec python -m write_side.parcels.relay",
        "parcels-relay-2: exec python -m write_side.parcels.relay",
        "parcels-relay-3: exec python -m write_side.parcels.relay",
    ]


def test_two_relays_by_default_and_one_on_request() -> None:
    assert default_environment({})["RELAY_PROCESSES"] == "2"
    assert add_standby_relays(PROCFILE, {"RELAY_PROCESSES": "1"}) == PROCFILE
    with pytest.raises(ValueError, match="at least 1"):
        add_standby_relays(PROCFILE, {"RELAY_PROCESSES": "0"})
