"""`cqrs run` runs `RELAY_PROCESSES` relays of each service (docs/adr/0029)."""

import pytest

from devstack.run import add_standby_relays, default_environment

PROCFILE = """orders-api: exec uvicorn write_side.orders.api:create_app --factory --port $ORDERS_API_PORT
orders-relay: exec python -m write_side.orders.relay
orders-saga: exec faust -A write_side.orders.saga:app worker
kitchen-relay: exec python -m write_side.kitchen.relay
"""


def test_each_relay_gets_standbys_with_the_same_command() -> None:
    lines = add_standby_relays(PROCFILE, {"RELAY_PROCESSES": "3"}).splitlines()
    assert lines == [
        "orders-api: exec uvicorn write_side.orders.api:create_app --factory --port $ORDERS_API_PORT",
        "orders-relay: exec python -m write_side.orders.relay",
        "orders-relay-2: exec python -m write_side.orders.relay",
        "orders-relay-3: exec python -m write_side.orders.relay",
        "orders-saga: exec faust -A write_side.orders.saga:app worker",
        "kitchen-relay: exec python -m write_side.kitchen.relay",
        "kitchen-relay-2: exec python -m write_side.kitchen.relay",
        "kitchen-relay-3: exec python -m write_side.kitchen.relay",
    ]


def test_two_relays_by_default_and_one_on_request() -> None:
    assert default_environment({})["RELAY_PROCESSES"] == "2"
    assert add_standby_relays(PROCFILE, {"RELAY_PROCESSES": "1"}) == PROCFILE
    with pytest.raises(ValueError, match="at least 1"):
        add_standby_relays(PROCFILE, {"RELAY_PROCESSES": "0"})
