"""The accounting command API over HTTP, on SQLite and on PostgreSQL (one fresh schema per test)."""

from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tests.support import bearer
from write_side.accounting.api import create_app
from write_side.accounting.settings import AccountingSettings

ACCOUNT = {"consumer_id": "cust-1", "credit_limit_cents": 10_000}


@pytest.fixture
def client(store):
    settings = AccountingSettings(
        accounting_database_url=store.url("accounting"), accounting_database_schema=store.schema
    )
    with TestClient(create_app(settings), headers=bearer()) as test_client:
        yield test_client


def stored(client: TestClient) -> int | None:
    """The position of the last event in the accounting log."""
    return client.app.state.accounting.recorder.max_notification_id()


def open_account(client: TestClient, body: dict = ACCOUNT) -> dict:
    response = client.post("/accounts", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def block(client: TestClient, consumer_id: str = "cust-1", reason: str = "stolen"):
    return client.post(f"/accounts/{consumer_id}/block", json={"reason": reason})


def unblock(client: TestClient, consumer_id: str = "cust-1"):
    return client.post(f"/accounts/{consumer_id}/unblock")


def test_health(client):
    assert client.get("/health").json() == {"status": "ok"}


# Commands that succeed


def test_open_account_is_a_201_with_nothing_authorized(client):
    assert open_account(client) == {"consumer_id": "cust-1", "version": 1}

    response = client.get("/accounts/cust-1")

    assert response.status_code == 200
    assert response.json() == {
        "consumer_id": "cust-1",
        "credit_limit_cents": 10_000,
        "authorized_total_cents": 0,
        "card_blocked": False,
        "version": 1,
    }
    assert stored(client) == 1


def test_block_then_unblock(client):
    open_account(client)

    blocked = block(client)
    after_block = client.get("/accounts/cust-1").json()
    unblocked = unblock(client)

    assert (blocked.status_code, blocked.json()) == (200, {"consumer_id": "cust-1", "version": 2})
    assert (after_block["card_blocked"], after_block["version"]) == (True, 2)
    assert (unblocked.status_code, unblocked.json()) == (
        200,
        {"consumer_id": "cust-1", "version": 3},
    )
    assert client.get("/accounts/cust-1").json()["card_blocked"] is False
    assert stored(client) == 3


def test_the_authorized_total_shows_what_the_saga_authorized(client):
    open_account(client)
    application = client.app.state.accounting
    application.authorize(str(uuid4()), "cust-1", 2500)

    account = client.get("/accounts/cust-1").json()

    assert (account["authorized_total_cents"], account["version"]) == (2500, 2)


# Commands that are refused


def test_opening_twice_is_a_409_and_stores_nothing(client):
    open_account(client)

    response = client.post("/accounts", json={**ACCOUNT, "credit_limit_cents": 1})

    assert response.status_code == 409
    assert response.json()["detail"] == "consumer cust-1 already has an account"
    assert stored(client) == 1
    assert client.get("/accounts/cust-1").json()["credit_limit_cents"] == 10_000


@pytest.mark.parametrize(
    ("history", "command", "message"),
    [
        ([block], block, "the card of cust-1 is already blocked"),
        ([], unblock, "the card of cust-1 is not blocked"),
    ],
    ids=["block twice", "unblock an unblocked card"],
)
def test_a_command_the_state_forbids_is_a_409_and_stores_nothing(client, history, command, message):
    open_account(client)
    for step in history:
        step(client)
    before = stored(client)

    response = command(client)

    assert response.status_code == 409
    assert response.json()["detail"] == message
    assert stored(client) == before


def test_an_unknown_account_is_a_404(client):
    got = client.get("/accounts/cust-9")
    blocked = block(client, "cust-9")
    unblocked = unblock(client, "cust-9")

    assert [r.status_code for r in (got, blocked, unblocked)] == [404, 404, 404]
    assert got.json()["detail"] == "no account for consumer cust-9"
    assert stored(client) is None


INVALID_ACCOUNTS = {
    "unknown field": ({**ACCOUNT, "currency": "EUR"}, ("body", "currency")),
    "zero limit": ({**ACCOUNT, "credit_limit_cents": 0}, ("body", "credit_limit_cents")),
    "negative limit": ({**ACCOUNT, "credit_limit_cents": -1}, ("body", "credit_limit_cents")),
    "limit too high": (
        {**ACCOUNT, "credit_limit_cents": 1_000_000_001},
        ("body", "credit_limit_cents"),
    ),
    "missing limit": ({"consumer_id": "cust-1"}, ("body", "credit_limit_cents")),
    "wrong type": ({**ACCOUNT, "credit_limit_cents": "lots"}, ("body", "credit_limit_cents")),
    "65-char consumer_id": ({**ACCOUNT, "consumer_id": "c" * 65}, ("body", "consumer_id")),
    "consumer_id with a slash": ({**ACCOUNT, "consumer_id": "a/b"}, ("body", "consumer_id")),
}


@pytest.mark.parametrize(("body", "loc"), INVALID_ACCOUNTS.values(), ids=INVALID_ACCOUNTS.keys())
def test_an_invalid_account_is_a_422_naming_the_field_and_stores_nothing(client, body, loc):
    open_account(client, {"consumer_id": "cust-0", "credit_limit_cents": 1})
    before = stored(client)

    response = client.post("/accounts", json=body)

    assert response.status_code == 422
    assert [tuple(error["loc"]) for error in response.json()["errors"]] == [loc]
    assert stored(client) == before


INVALID_BLOCKS = {
    "empty reason": ({"reason": ""}, ("body", "reason")),
    "missing reason": ({}, ("body", "reason")),
    "unknown field": ({"reason": "x", "until": "never"}, ("body", "until")),
}


@pytest.mark.parametrize(("body", "loc"), INVALID_BLOCKS.values(), ids=INVALID_BLOCKS.keys())
def test_an_invalid_block_is_a_422_and_stores_nothing(client, body, loc):
    open_account(client)

    response = client.post("/accounts/cust-1/block", json=body)

    assert response.status_code == 422
    assert [tuple(error["loc"]) for error in response.json()["errors"]] == [loc]
    assert stored(client) == 1
    assert client.get("/accounts/cust-1").json()["card_blocked"] is False


def test_a_malformed_consumer_id_in_the_path_is_a_422(client):
    assert client.get(f"/accounts/{'c' * 65}").status_code == 422
    assert client.get("/accounts/cust%201").status_code == 422
    assert block(client, "cust%201").status_code == 422
    assert stored(client) is None
