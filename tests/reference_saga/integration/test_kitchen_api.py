"""The kitchen command API over HTTP, on SQLite and on PostgreSQL (one fresh schema per test)."""

import uuid

import pytest
from fastapi.testclient import TestClient

from tests.support import bearer
from write_side.kitchen.api import create_app
from write_side.kitchen.settings import KitchenSettings

RESTAURANT = {"restaurant_id": "rest-1", "name": "Pizzeria", "menu": ["pizza", "soda"]}
PIZZA = {"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}


@pytest.fixture
def client(store):
    settings = KitchenSettings(
        kitchen_database_url=store.url("kitchen"), kitchen_database_schema=store.schema
    )
    with TestClient(create_app(settings), headers=bearer()) as test_client:
        yield test_client


def stored(client: TestClient) -> int | None:
    """The position of the last event in the kitchen's log."""
    return client.app.state.kitchen.recorder.max_notification_id()


def register(client: TestClient, body: dict = RESTAURANT, **headers: str) -> dict:
    response = client.post("/restaurants", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def restaurant(client: TestClient, restaurant_id: str = "rest-1") -> dict:
    response = client.get(f"/restaurants/{restaurant_id}")
    assert response.status_code == 200, response.text
    return response.json()


def stored_metadata(client: TestClient, position: int):
    application = client.app.state.kitchen
    [notification] = application.recorder.select_notifications(position, 1)
    return application.mapper.metadata_of(notification)


# Commands that succeed


def test_health(client):
    assert client.get("/health").json() == {"status": "ok"}


def test_register_a_restaurant_is_201_and_it_is_open(client):
    accepted = register(client)

    assert accepted == {"restaurant_id": "rest-1", "version": 1, "position": stored(client)}
    assert accepted["position"] >= 1
    assert restaurant(client) == {**RESTAURANT, "open": True, "version": 1}


def test_close_then_open_a_restaurant(client):
    registered = register(client)

    closed = client.post("/restaurants/rest-1/close")
    closed_view = restaurant(client)
    opened = client.post("/restaurants/rest-1/open")

    assert (closed.status_code, opened.status_code) == (200, 200)
    assert closed.json()["version"] == 2
    assert (closed_view["open"], closed_view["version"]) == (False, 2)
    assert opened.json() == {"restaurant_id": "rest-1", "version": 3, "position": stored(client)}
    assert registered["position"] < closed.json()["position"] < opened.json()["position"]
    assert (restaurant(client)["open"], restaurant(client)["version"]) == (True, 3)


@pytest.mark.parametrize("command", ["open", "close"])
def test_repeating_open_or_close_is_accepted_and_stores_nothing(client, command):
    register(client)
    if command == "close":
        client.post("/restaurants/rest-1/close")
    before, version = stored(client), restaurant(client)["version"]

    response = client.post(f"/restaurants/rest-1/{command}")

    assert response.status_code == 200
    assert response.json() == {"restaurant_id": "rest-1", "version": version, "position": None}
    assert stored(client) == before


def test_set_the_menu(client):
    register(client)

    response = client.put("/restaurants/rest-1/menu", json={"menu": ["sushi", "ramen"]})

    assert response.status_code == 200
    assert response.json() == {"restaurant_id": "rest-1", "version": 2, "position": stored(client)}
    assert restaurant(client)["menu"] == ["sushi", "ramen"]


def test_a_ticket_shows_its_state_and_reason(client):
    application = client.app.state.kitchen
    register(client)
    pending_id, rejected_id = uuid.uuid4(), uuid.uuid4()
    application.create_ticket(pending_id, "rest-1", "c-1", [PIZZA], 2500)
    client.post("/restaurants/rest-1/close")
    application.create_ticket(rejected_id, "rest-1", "c-1", [PIZZA], 2500)
    application.approve_ticket(pending_id)

    approved = client.get(f"/tickets/{pending_id}")
    rejected = client.get(f"/tickets/{rejected_id}")

    assert (approved.status_code, rejected.status_code) == (200, 200)
    assert approved.json() == {
        "order_id": str(pending_id),
        "restaurant_id": "rest-1",
        "state": "AWAITING_ACCEPTANCE",
        "reason": None,
        "version": 2,
    }
    assert rejected.json() == {
        "order_id": str(rejected_id),
        "restaurant_id": "rest-1",
        "state": "REJECTED",
        "reason": "restaurant rest-1 is closed",
        "version": 1,
    }


# Commands that are refused


def test_registering_an_existing_restaurant_is_a_409_and_stores_nothing(client):
    register(client)
    before = stored(client)

    response = client.post("/restaurants", json={**RESTAURANT, "name": "Another"})

    assert response.status_code == 409
    assert response.json()["detail"] == "restaurant rest-1 is already registered"
    assert stored(client) == before
    assert restaurant(client)["name"] == "Pizzeria"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/restaurants/rest-9", None),
        ("post", "/restaurants/rest-9/open", None),
        ("post", "/restaurants/rest-9/close", None),
        ("put", "/restaurants/rest-9/menu", {"menu": ["pizza"]}),
    ],
    ids=["get", "open", "close", "set menu"],
)
def test_an_unknown_restaurant_is_a_404_and_stores_nothing(client, method, path, body):
    register(client)
    before = stored(client)

    response = client.request(method, path, json=body)

    assert response.status_code == 404
    assert response.json()["detail"] == "restaurant rest-9 not found"
    assert stored(client) == before


def test_an_unknown_ticket_is_a_404(client):
    order_id = uuid.uuid4()

    response = client.get(f"/tickets/{order_id}")

    assert response.status_code == 404
    assert response.json()["detail"] == f"ticket for order {order_id} not found"


def test_a_restaurant_is_not_a_ticket(client):
    from write_side.kitchen.domain import restaurant_uuid

    register(client)

    assert client.get(f"/tickets/{restaurant_uuid('rest-1')}").status_code == 404


def test_a_malformed_order_id_is_a_422(client):
    response = client.get("/tickets/not-a-uuid")

    assert response.status_code == 422
    assert [tuple(e["loc"]) for e in response.json()["errors"]] == [("path", "order_id")]


def without(field: str) -> dict:
    return {k: v for k, v in RESTAURANT.items() if k != field}


INVALID_REGISTRATIONS = {
    "unknown field": ({**RESTAURANT, "cuisine": "pizza"}, ("body", "cuisine")),
    "missing name": (without("name"), ("body", "name")),
    "missing menu": (without("menu"), ("body", "menu")),
    "empty name": ({**RESTAURANT, "name": ""}, ("body", "name")),
    "201-char name": ({**RESTAURANT, "name": "n" * 201}, ("body", "name")),
    "empty menu": ({**RESTAURANT, "menu": []}, ("body", "menu")),
    "201 menu items": (
        {**RESTAURANT, "menu": [f"item-{i}" for i in range(201)]},
        ("body", "menu"),
    ),
    "duplicate menu item": ({**RESTAURANT, "menu": ["pizza", "pizza"]}, ("body", "menu")),
    "menu item not a string": ({**RESTAURANT, "menu": ["pizza", 7]}, ("body", "menu", 1)),
    "empty menu item": ({**RESTAURANT, "menu": ["pizza", ""]}, ("body", "menu", 1)),
    "id with a space": ({**RESTAURANT, "restaurant_id": "rest 1"}, ("body", "restaurant_id")),
    "65-char id": ({**RESTAURANT, "restaurant_id": "r" * 65}, ("body", "restaurant_id")),
}


@pytest.mark.parametrize(
    ("body", "loc"), INVALID_REGISTRATIONS.values(), ids=INVALID_REGISTRATIONS.keys()
)
def test_an_invalid_registration_is_a_422_naming_the_field_and_stores_nothing(client, body, loc):
    register(client, {**RESTAURANT, "restaurant_id": "rest-0"})
    before = stored(client)

    response = client.post("/restaurants", json=body)

    assert response.status_code == 422
    assert [tuple(error["loc"]) for error in response.json()["errors"]] == [loc]
    assert stored(client) == before
    assert client.get("/restaurants/rest-1").status_code == 404


def test_the_200_item_menu_limit_is_accepted(client):
    register(client, {**RESTAURANT, "menu": [f"item-{i}" for i in range(200)]})

    assert len(restaurant(client)["menu"]) == 200


INVALID_MENUS = {
    "empty": ({"menu": []}, ("body", "menu")),
    "missing": ({}, ("body", "menu")),
    "duplicate": ({"menu": ["a", "b", "a"]}, ("body", "menu")),
    "unknown field": ({"menu": ["a"], "prices": {}}, ("body", "prices")),
}


@pytest.mark.parametrize(("body", "loc"), INVALID_MENUS.values(), ids=INVALID_MENUS.keys())
def test_an_invalid_menu_is_a_422_and_stores_nothing(client, body, loc):
    register(client)
    before = stored(client)

    response = client.put("/restaurants/rest-1/menu", json=body)

    assert response.status_code == 422
    assert [tuple(error["loc"]) for error in response.json()["errors"]] == [loc]
    assert stored(client) == before
    assert restaurant(client)["menu"] == RESTAURANT["menu"]


@pytest.mark.parametrize("restaurant_id", ["rest%201", "r" * 65])
def test_a_malformed_restaurant_id_in_the_path_is_a_422(client, restaurant_id):
    register(client)
    before = stored(client)

    responses = [
        client.get(f"/restaurants/{restaurant_id}"),
        client.post(f"/restaurants/{restaurant_id}/close"),
        client.put(f"/restaurants/{restaurant_id}/menu", json={"menu": ["a"]}),
    ]

    assert [r.status_code for r in responses] == [422, 422, 422]
    assert stored(client) == before


# Metadata


def test_the_correlation_id_header_is_stored_with_the_event(client):
    registered = register(client, **{"X-Correlation-ID": "onboarding-7"})
    closed = client.post("/restaurants/rest-1/close", headers={"X-Correlation-ID": "onboarding-7"})

    first = stored_metadata(client, registered["position"])
    second = stored_metadata(client, closed.json()["position"])
    assert first.correlation_id == second.correlation_id == "onboarding-7"
    assert first.causation_id != second.causation_id
