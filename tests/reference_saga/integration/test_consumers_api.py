"""The consumers command API over HTTP, on SQLite and on PostgreSQL (one fresh schema per test)."""

import pytest
from fastapi.testclient import TestClient

from tests.support import bearer
from write_side.consumers.api import create_app
from write_side.consumers.settings import ConsumersSettings

ANN = {"consumer_id": "cust-1", "name": "Ann"}


@pytest.fixture
def client(store):
    settings = ConsumersSettings(
        consumers_database_url=store.url("consumers"), consumers_database_schema=store.schema
    )
    with TestClient(create_app(settings), headers=bearer()) as test_client:
        yield test_client


def stored(client: TestClient) -> int | None:
    """The position of the last event in the consumers log."""
    return client.app.state.consumers.recorder.max_notification_id()


def register(client: TestClient, body: dict = ANN) -> dict:
    response = client.post("/consumers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def deactivate(client: TestClient, consumer_id: str = "cust-1", reason: str = "unpaid bills"):
    return client.post(f"/consumers/{consumer_id}/deactivate", json={"reason": reason})


def reactivate(client: TestClient, consumer_id: str = "cust-1"):
    return client.post(f"/consumers/{consumer_id}/reactivate")


def test_health(client):
    assert client.get("/health").json() == {"status": "ok"}


# Commands that succeed


def test_register_is_a_201_and_the_consumer_is_active(client):
    assert register(client) == {"consumer_id": "cust-1", "version": 1}

    response = client.get("/consumers/cust-1")

    assert response.status_code == 200
    assert response.json() == {"consumer_id": "cust-1", "name": "Ann", "active": True, "version": 1}
    assert stored(client) == 1


def test_deactivate_then_reactivate(client):
    register(client)

    deactivated = deactivate(client)
    after_deactivation = client.get("/consumers/cust-1").json()
    reactivated = reactivate(client)

    assert (deactivated.status_code, deactivated.json()) == (
        200,
        {"consumer_id": "cust-1", "version": 2},
    )
    assert (after_deactivation["active"], after_deactivation["version"]) == (False, 2)
    assert (reactivated.status_code, reactivated.json()) == (
        200,
        {"consumer_id": "cust-1", "version": 3},
    )
    assert client.get("/consumers/cust-1").json()["active"] is True
    assert stored(client) == 3


def test_the_correlation_id_header_is_stored_with_the_event(client):
    client.post("/consumers", json=ANN, headers={"X-Correlation-ID": "signup-7"})

    application = client.app.state.consumers
    [notification] = application.recorder.select_notifications(1, 1)
    assert application.mapper.metadata_of(notification).correlation_id == "signup-7"


# Commands that are refused


def test_registering_twice_is_a_409_and_stores_nothing(client):
    register(client)

    response = client.post("/consumers", json={**ANN, "name": "Bob"})

    assert response.status_code == 409
    assert response.json()["detail"] == "consumer cust-1 is already registered"
    assert stored(client) == 1
    assert client.get("/consumers/cust-1").json()["name"] == "Ann"


@pytest.mark.parametrize(
    ("history", "command", "message"),
    [
        ([deactivate], deactivate, "consumer cust-1 is already deactivated"),
        ([], reactivate, "consumer cust-1 is already active"),
    ],
    ids=["deactivate twice", "reactivate an active one"],
)
def test_a_command_the_state_forbids_is_a_409_and_stores_nothing(client, history, command, message):
    register(client)
    for step in history:
        step(client)
    before = stored(client)

    response = command(client)

    assert response.status_code == 409
    assert response.json()["detail"] == message
    assert stored(client) == before


def test_an_unknown_consumer_is_a_404(client):
    got = client.get("/consumers/cust-9")
    deactivated = deactivate(client, "cust-9")
    reactivated = reactivate(client, "cust-9")

    assert [r.status_code for r in (got, deactivated, reactivated)] == [404, 404, 404]
    assert got.json()["detail"] == "consumer cust-9 not found"
    assert stored(client) is None


INVALID_REGISTRATIONS = {
    "unknown field": ({**ANN, "vip": True}, ("body", "vip")),
    "missing name": ({"consumer_id": "cust-1"}, ("body", "name")),
    "empty name": ({**ANN, "name": ""}, ("body", "name")),
    "201-char name": ({**ANN, "name": "n" * 201}, ("body", "name")),
    "65-char consumer_id": ({**ANN, "consumer_id": "c" * 65}, ("body", "consumer_id")),
    "consumer_id with a space": ({**ANN, "consumer_id": "cust 1"}, ("body", "consumer_id")),
    "wrong type": ({**ANN, "name": 7}, ("body", "name")),
}


@pytest.mark.parametrize(
    ("body", "loc"), INVALID_REGISTRATIONS.values(), ids=INVALID_REGISTRATIONS.keys()
)
def test_an_invalid_registration_is_a_422_naming_the_field_and_stores_nothing(client, body, loc):
    register(client, {"consumer_id": "cust-0", "name": "Zed"})
    before = stored(client)

    response = client.post("/consumers", json=body)

    assert response.status_code == 422
    assert [tuple(error["loc"]) for error in response.json()["errors"]] == [loc]
    assert stored(client) == before


INVALID_DEACTIVATIONS = {
    "empty reason": ({"reason": ""}, ("body", "reason")),
    "missing reason": ({}, ("body", "reason")),
    "unknown field": ({"reason": "x", "forever": True}, ("body", "forever")),
}


@pytest.mark.parametrize(
    ("body", "loc"), INVALID_DEACTIVATIONS.values(), ids=INVALID_DEACTIVATIONS.keys()
)
def test_an_invalid_deactivation_is_a_422_and_stores_nothing(client, body, loc):
    register(client)

    response = client.post("/consumers/cust-1/deactivate", json=body)

    assert response.status_code == 422
    assert [tuple(error["loc"]) for error in response.json()["errors"]] == [loc]
    assert stored(client) == 1
    assert client.get("/consumers/cust-1").json()["active"] is True


def test_a_malformed_consumer_id_in_the_path_is_a_422(client):
    assert client.get(f"/consumers/{'c' * 65}").status_code == 422
    assert client.get("/consumers/cust%201").status_code == 422
    assert deactivate(client, "cust%201").status_code == 422
    assert stored(client) is None
