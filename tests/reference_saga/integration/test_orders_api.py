"""The orders command API over HTTP, on SQLite and on PostgreSQL (one fresh schema per test)."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from contracts.consistency import ConsistencyToken
from kernel.group_commit import _current
from tests.reference_saga.examples import PLACE_ORDER
from tests.reference_saga.stores import orders_settings
from tests.support import bearer
from write_side.orders.api import create_app

CONFLICT = "the aggregate was changed by another command at the same time; reload it and retry"

ORDER = PLACE_ORDER
PIZZA = ORDER["line_items"][0]


@pytest.fixture
def settings(store):
    return orders_settings(store)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), headers=bearer()) as test_client:
        yield test_client
        # Application.close() leaves eventsourcing-sqlalchemy's pool open: release it.
        test_client.app.state.orders.recorder.datastore.engine.dispose()


def stored(client: TestClient) -> int | None:
    """The position of the last event in the orders log."""
    return client.app.state.orders.recorder.max_notification_id()


def place(client: TestClient, **headers: str) -> dict:
    response = client.post("/orders", json=ORDER, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def approved(client: TestClient, **headers: str) -> dict:
    """An order placed and approved (as the saga would), so it may be cancelled."""
    placed = place(client, **headers)
    client.app.state.orders.approve_order(uuid.UUID(placed["order_id"]))
    return placed


def cancel(client: TestClient, order_id: str, **headers: str):
    return client.post(
        f"/orders/{order_id}/cancel", json={"reason": "changed my mind"}, headers=headers
    )


def stored_metadata(client: TestClient, position: int):
    application = client.app.state.orders
    [notification] = application.recorder.select_notifications(position, 1)
    return application.mapper.metadata_of(notification)


# Commands that succeed


def test_the_order_keeps_its_structured_address(client):
    order_id = place(client)["order_id"]

    assert client.get(f"/orders/{order_id}").json()["delivery_address"] == ORDER["delivery_address"]


def test_an_address_as_one_line_of_text_is_still_accepted_as_its_street(client):
    response = client.post("/orders", json={**ORDER, "delivery_address": "1 Main St, Springfield"})

    assert response.status_code == 201
    order = client.get(f"/orders/{response.json()['order_id']}").json()
    assert order["delivery_address"] == {
        "street": "1 Main St, Springfield",
        "city": None,
        "postal_code": None,
        "country": None,
    }


def test_place_order_is_accepted_with_its_position_and_consistency_token(client):
    accepted = place(client)

    order_id = str(uuid.UUID(accepted["order_id"]))
    assert accepted["version"] == 1
    assert accepted["position"] >= 1
    assert accepted["position"] == stored(client)
    assert accepted["consistency_token"] == f"orders:{accepted['position']}:{order_id}:1"
    assert ConsistencyToken.parse(accepted["consistency_token"]) == ConsistencyToken(
        "orders", accepted["position"], order_id, 1
    )


def test_positions_increase_across_commands(client):
    first = approved(client)
    second = place(client)
    cancelled = cancel(client, first["order_id"]).json()

    assert first["position"] < second["position"] < cancelled["position"]
    assert cancelled["position"] == stored(client)


def test_get_order_shows_its_current_state(client):
    order_id = place(client)["order_id"]

    response = client.get(f"/orders/{order_id}")

    assert response.status_code == 200
    assert response.json() == {
        "order_id": order_id,
        "version": 1,
        "state": "APPROVAL_PENDING",
        **ORDER,
        "total_cents": 2 * 1250 + 3 * 300,
        "rejection_reason": None,
        "cancellation_reason": None,
    }


def test_cancelling_an_approved_order_makes_version_3(client):
    placed = approved(client)

    response = cancel(client, placed["order_id"])

    assert response.status_code == 200
    accepted = response.json()
    assert (accepted["order_id"], accepted["version"]) == (placed["order_id"], 3)
    assert accepted["consistency_token"] == (
        f"orders:{accepted['position']}:{placed['order_id']}:3"
    )
    order = client.get(f"/orders/{placed['order_id']}").json()
    assert (order["state"], order["version"]) == ("CANCELLED", 3)
    assert order["cancellation_reason"] == "changed my mind"


# Commands that are refused


def test_cancelling_twice_is_a_409_and_stores_nothing(client):
    order_id = approved(client)["order_id"]
    cancel(client, order_id)
    before = stored(client)

    response = cancel(client, order_id)

    assert response.status_code == 409
    assert response.json()["detail"] == "cannot cancel an order that is CANCELLED"
    assert stored(client) == before


def test_cancelling_while_the_saga_is_in_progress_is_a_409_and_stores_nothing(client):
    order_id = place(client)["order_id"]
    before = stored(client)

    response = cancel(client, order_id)

    assert response.status_code == 409
    assert "saga is still in progress" in response.json()["detail"]
    assert stored(client) == before


def test_an_unknown_order_is_a_404(client):
    order_id = str(uuid.uuid4())

    got = client.get(f"/orders/{order_id}")
    cancelled = cancel(client, order_id)

    assert (got.status_code, cancelled.status_code) == (404, 404)
    assert got.json()["detail"] == cancelled.json()["detail"] == f"order {order_id} not found"
    assert stored(client) is None


def without(field: str) -> dict:
    return {k: v for k, v in ORDER.items() if k != field}


INVALID_ORDERS = {
    "unknown field": ({**ORDER, "coupon": "FREE"}, ("body", "coupon")),
    "quantity 0": (
        {**ORDER, "line_items": [{**PIZZA, "quantity": 0}]},
        ("body", "line_items", 0, "quantity"),
    ),
    "negative price": (
        {**ORDER, "line_items": [{**PIZZA, "unit_price_cents": -1}]},
        ("body", "line_items", 0, "unit_price_cents"),
    ),
    "no line items": ({**ORDER, "line_items": []}, ("body", "line_items")),
    "51 line items": ({**ORDER, "line_items": [PIZZA] * 51}, ("body", "line_items")),
    "65-char customer_id": ({**ORDER, "customer_id": "c" * 65}, ("body", "customer_id")),
    "missing field": (without("delivery_address"), ("body", "delivery_address")),
    "address without city": (
        {**ORDER, "delivery_address": {**ORDER["delivery_address"], "city": ""}},
        ("body", "delivery_address", "structured", "city"),
    ),
    "address country not ISO": (
        {**ORDER, "delivery_address": {**ORDER["delivery_address"], "country": "USA"}},
        ("body", "delivery_address", "structured", "country"),
    ),
    "empty address text": ({**ORDER, "delivery_address": ""}, ("body", "delivery_address", "text")),
    "wrong type": (
        {**ORDER, "line_items": [{**PIZZA, "quantity": "two"}]},
        ("body", "line_items", 0, "quantity"),
    ),
}


@pytest.mark.parametrize(("body", "loc"), INVALID_ORDERS.values(), ids=INVALID_ORDERS.keys())
def test_an_invalid_order_is_a_422_naming_the_field_and_stores_nothing(client, body, loc):
    place(client)
    before = stored(client)

    response = client.post("/orders", json=body)

    assert response.status_code == 422
    assert [tuple(error["loc"]) for error in response.json()["errors"]] == [loc]
    assert stored(client) == before


INVALID_CANCELS = {
    "empty reason": ({"reason": ""}, ("body", "reason")),
    "missing reason": ({}, ("body", "reason")),
    "unknown field": ({"reason": "x", "refund": True}, ("body", "refund")),
}


@pytest.mark.parametrize(("body", "loc"), INVALID_CANCELS.values(), ids=INVALID_CANCELS.keys())
def test_an_invalid_cancel_is_a_422_naming_the_field_and_stores_nothing(client, body, loc):
    order_id = place(client)["order_id"]
    before = stored(client)

    response = client.post(f"/orders/{order_id}/cancel", json=body)

    assert response.status_code == 422
    assert [tuple(error["loc"]) for error in response.json()["errors"]] == [loc]
    assert stored(client) == before
    assert client.get(f"/orders/{order_id}").json()["state"] == "APPROVAL_PENDING"


def test_a_malformed_order_id_is_a_422(client):
    assert client.get("/orders/not-a-uuid").status_code == 422
    assert cancel(client, "not-a-uuid").status_code == 422
    assert stored(client) is None


# Concurrency


def test_two_racing_cancels_one_wins_and_the_other_is_a_409(client):
    order_id = approved(client)["order_id"]
    start = threading.Barrier(2, timeout=30)

    def racing_cancel(_):
        start.wait()
        return cancel(client, order_id)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(racing_cancel, range(2)))

    assert sorted(r.status_code for r in responses) == [200, 409]
    [refused] = [r for r in responses if r.status_code == 409]
    assert refused.json()["detail"] in (CONFLICT, "cannot cancel an order that is CANCELLED")
    assert client.get(f"/orders/{order_id}").json()["version"] == 3


def test_two_cancels_that_both_loaded_the_same_version_store_one_and_refuse_the_other(
    client, monkeypatch
):
    """Both commands load the order in their turns before either saves (the first is
    detached from its turn while it waits): the second's cancel is stored; the first's
    save meets it, so the first runs again, reads a cancelled order and is refused.
    Never both stored, and never a version conflict its caller could not avoid."""
    order_id = approved(client)["order_id"]
    application = client.app.state.orders
    both_loaded = threading.Barrier(2, timeout=30)
    load = application.get_order
    waited: set[int] = set()

    def load_then_wait_for_the_other(order_id):
        order = load(order_id)
        # Each command's first load in its turn (the route's own read, before the
        # command, is not one); a command run again loads alone.
        if _current.get() is not None and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            both_loaded.wait()
        return order

    monkeypatch.setattr(application, "get_order", load_then_wait_for_the_other)
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: cancel(client, order_id), range(2)))
    monkeypatch.undo()

    assert sorted(r.status_code for r in responses) == [200, 409]
    [refused] = [r for r in responses if r.status_code == 409]
    assert refused.json()["detail"] == "cannot cancel an order that is CANCELLED"
    assert stored(client) == max(r.json().get("position", 0) for r in responses)
    assert client.get(f"/orders/{order_id}").json()["version"] == 3


def test_a_command_on_a_stale_order_is_a_409_conflict(client, monkeypatch):
    order_id = approved(client)["order_id"]
    application = client.app.state.orders
    stale = application.get_order(uuid.UUID(order_id))
    assert cancel(client, order_id).status_code == 200
    before = stored(client)

    monkeypatch.setattr(application, "get_order", lambda _: stale)
    response = cancel(client, order_id)

    assert response.status_code == 409
    assert response.json()["detail"] == CONFLICT
    assert stored(client) == before


# Metadata


def test_the_correlation_id_header_is_stored_with_the_event(client):
    placed = approved(client, **{"X-Correlation-ID": "checkout-42"})
    cancelled = cancel(client, placed["order_id"], **{"X-Correlation-ID": "checkout-42"}).json()

    placed_metadata = stored_metadata(client, placed["position"])
    cancelled_metadata = stored_metadata(client, cancelled["position"])
    assert placed_metadata.correlation_id == cancelled_metadata.correlation_id == "checkout-42"
    causes = {placed_metadata.causation_id, cancelled_metadata.causation_id}
    assert len(causes) == 2 and "checkout-42" not in causes  # each command is its own cause


def test_without_a_correlation_id_header_the_command_starts_its_own_correlation(client):
    placed = place(client)

    metadata = stored_metadata(client, placed["position"])
    assert metadata.correlation_id == metadata.causation_id
    uuid.UUID(metadata.correlation_id)


def test_the_token_subject_and_roles_are_recorded_as_the_actor_and_a_saga_step_has_none(client):
    customer = ORDER["customer_id"]
    placed = place(client, **bearer(customer, "customer"))
    client.app.state.orders.approve_order(uuid.UUID(placed["order_id"]))  # as the saga does
    cancelled = cancel(client, placed["order_id"], **bearer("ops-7", "ops")).json()

    by_customer = stored_metadata(client, placed["position"])
    assert (by_customer.actor, by_customer.actor_roles) == (customer, ("customer",))
    by_saga = stored_metadata(client, placed["position"] + 1)
    assert (by_saga.actor, by_saga.actor_roles) == (None, ())
    by_ops = stored_metadata(client, cancelled["position"])
    assert (by_ops.actor, by_ops.actor_roles) == ("ops-7", ("ops",))


def test_an_overlong_correlation_id_is_a_422_and_stores_nothing(client):
    response = client.post("/orders", json=ORDER, headers={"X-Correlation-ID": "c" * 129})

    assert response.status_code == 422
    assert [tuple(e["loc"]) for e in response.json()["errors"]] == [("header", "x-correlation-id")]
    assert stored(client) is None
