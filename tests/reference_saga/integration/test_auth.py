"""Authentication and authorization of every API, each in a process of its own.

- The authorization matrix: every route of the four command APIs and the query API ×
  every role (none, customer, restaurant, ops) × own and someone else's resource,
  against each service directly and through the gateway (Envoy, its configuration
  generated from the Procfile as `cqrs run` makes it); docs/auth.md's table is what it
  checks.
- Token attacks, each refused with a 401 by every service.
- What stays open (health, the API docs, the contracts' pages) and the OpenAPI
  documents (a bearer scheme and 401/403 on every protected operation).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from devstack.gateway import Gateway, GatewaySettings, discover_apis, envoy_config, write_config
from devstack.servers import REPO_ROOT, free_port
from kernel.application import open_application
from tests import processes
from tests.reference_saga.examples import DELIVERY_ADDRESS
from tests.reference_saga.integration.test_query_api import now_ms, order_doc
from tests.reference_saga.integration.test_query_api_saga import ticket_doc
from tests.support import bearer, wait_routable
from tests.token_attacks import ATTACKS, attack_token
from write_side.kitchen.application import KitchenApplication

CUSTOMER, OTHER_CUSTOMER = "cust-a", "cust-b"
RESTAURANT, OTHER_RESTAURANT = "rest-a", "rest-b"
SERVICES = ("orders", "consumers", "kitchen", "accounting", "query")
PUBLIC = {"/health", "/asyncapi", "/asyncapi.json"}


@dataclass
class Stack:
    urls: dict[str, str]
    order_id: str  # cust-a's order at rest-a, in the orders service and the read model
    ticket_id: str  # its ticket, in the kitchen service and the read model
    gateway: str  # the gateway's URL; `<gateway>/<service>-api/...` reaches a service

    def url(self, service: str, via: str) -> str:
        return self.urls[service] if via == "direct" else f"{self.gateway}/{service}-api"


def _seed_kitchen(url: str, order_id: uuid.UUID) -> None:
    """A ticket of rest-a, made as the saga would (no saga worker runs here)."""
    kitchen = open_application(KitchenApplication, url, None)
    try:
        kitchen.register_restaurant(RESTAURANT, "A", ["pizza"])
        kitchen.register_restaurant(OTHER_RESTAURANT, "B", ["pizza"])
        pizza = [{"menu_item_id": "pizza", "quantity": 1, "unit_price_cents": 1000}]
        kitchen.create_ticket(order_id, RESTAURANT, CUSTOMER, pizza, 1000)
    finally:
        kitchen.close()


def _seed_read_models(mongo_url: str, database: str, order_id: str, ticket_id: str) -> None:
    """cust-a's order at rest-a and its ticket; cust-b's at rest-b and its ticket."""
    mine = order_doc(1, customer_id=CUSTOMER, order_id=order_id)
    theirs = order_doc(2, customer_id=OTHER_CUSTOMER)
    mine["restaurant_id"], theirs["restaurant_id"] = RESTAURANT, OTHER_RESTAURANT
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, tz_aware=True)
    try:
        db = client[database]
        db["orders"].insert_many([mine, theirs])
        db["tickets"].insert_many(
            [
                ticket_doc(now_ms(), restaurant_id=RESTAURANT, order_id=ticket_id),
                ticket_doc(now_ms(), restaurant_id=OTHER_RESTAURANT),
            ]
        )
    finally:
        client.close()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, mongo_url: str, kafka_bootstrap: str
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("auth")
    database = f"test_auth_{uuid.uuid4().hex[:8]}"
    env = {
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": database,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        **{f"{s.upper()}_DATABASE_URL": f"sqlite:///{tmp}/{s}.db" for s in SERVICES[:4]},
    }
    ticket = uuid.uuid4()
    _seed_kitchen(env["KITCHEN_DATABASE_URL"], ticket)
    ports = {service: free_port() for service in SERVICES}
    env |= {f"{service.upper()}_API_PORT": str(port) for service, port in ports.items()}
    apis = discover_apis((REPO_ROOT / "Procfile").read_text(), env)
    assert {api.name for api in apis} >= {f"{service}-api" for service in SERVICES}
    settings = GatewaySettings(port=free_port(), admin_port=free_port(), rate_limit=10_000)
    config = envoy_config(apis, settings, access_log_path=str(tmp / "access.log"))
    gateway = Gateway(tmp / "envoy", write_config(config, tmp / "envoy.json"), settings)
    factories = {
        service: "read_side.api:create_app"
        if service == "query"
        else f"write_side.{service}.api:create_app"
        for service in SERVICES
    }
    try:
        gateway.start()
        with processes.running_apis(factories, env, tmp, ports) as (urls, _):
            wait_routable(gateway.admin_url, len(apis))  # the gateway sees them ready
            ops = bearer()
            for consumer in (CUSTOMER, OTHER_CUSTOMER):
                body = {"consumer_id": consumer, "name": consumer}
                post = httpx.post(f"{urls['consumers']}/consumers", json=body, headers=ops)
                assert post.status_code == 201, post.text
                body = {"consumer_id": consumer, "credit_limit_cents": 10_000}
                post = httpx.post(f"{urls['accounting']}/accounts", json=body, headers=ops)
                assert post.status_code == 201, post.text
            placed = httpx.post(f"{urls['orders']}/orders", json=order_body(), headers=ops)
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["order_id"]
            _seed_read_models(mongo_url, database, order_id, str(ticket))
            yield Stack(urls, order_id, str(ticket), gateway.url)
    finally:
        gateway.stop()
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
        client.drop_database(database)
        client.close()


def order_body(customer: str = CUSTOMER) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "restaurant_id": RESTAURANT,
        "delivery_address": DELIVERY_ADDRESS,
        "line_items": [{"menu_item_id": "pizza", "quantity": 1, "unit_price_cents": 1000}],
    }


# ------------------------------------------------------------------ the matrix

# Who may call a route, on a resource of cust-a / rest-a (docs/auth.md):
OPS_ONLY = "ops"
CUSTOMER_OWNER = "customer"  # the customer it belongs to, and ops
RESTAURANT_OWNER = "restaurant"  # the restaurant it belongs to, and ops
BOTH_OWNERS = "customer+restaurant"  # the order's customer and its restaurant, and ops

CALLERS = {
    # name: (subject, roles)
    "none": None,
    "customer (own)": (CUSTOMER, ("customer",)),
    "customer (someone else's)": (OTHER_CUSTOMER, ("customer",)),
    "restaurant (own)": (RESTAURANT, ("restaurant",)),
    "restaurant (someone else's)": (OTHER_RESTAURANT, ("restaurant",)),
    "ops": ("ops-1", ("ops",)),
}


def allowed(rule: str, caller: str) -> bool:
    if caller == "ops":
        return True
    if caller == "none" or "someone else's" in caller:
        return False
    role = caller.split(" ")[0]
    return role in rule.split("+")


@dataclass(frozen=True)
class Route:
    service: str
    method: str
    path: str  # the OpenAPI path
    rule: str
    url: str = ""  # the path with cust-a's / rest-a's resource; default: `path`
    body: dict[str, Any] | None = None


ROUTES = [
    # orders
    Route("orders", "POST", "/orders", CUSTOMER_OWNER, body=order_body()),
    Route(
        "orders",
        "POST",
        "/orders/{order_id}/cancel",
        CUSTOMER_OWNER,
        "/orders/{order}/cancel",
        {"reason": "changed my mind"},
    ),
    Route("orders", "GET", "/orders/{order_id}", BOTH_OWNERS, "/orders/{order}"),
    # consumers
    Route(
        "consumers",
        "POST",
        "/consumers",
        CUSTOMER_OWNER,
        body={"consumer_id": CUSTOMER, "name": "A"},
    ),
    Route(
        "consumers",
        "POST",
        "/consumers/{consumer_id}/deactivate",
        OPS_ONLY,
        f"/consumers/{CUSTOMER}/deactivate",
        {"reason": "test"},
    ),
    Route(
        "consumers",
        "POST",
        "/consumers/{consumer_id}/reactivate",
        OPS_ONLY,
        f"/consumers/{CUSTOMER}/reactivate",
    ),
    Route("consumers", "GET", "/consumers/{consumer_id}", CUSTOMER_OWNER, f"/consumers/{CUSTOMER}"),
    # kitchen
    Route(
        "kitchen",
        "POST",
        "/restaurants",
        OPS_ONLY,
        body={"restaurant_id": RESTAURANT, "name": "A", "menu": ["pizza"]},
    ),
    Route(
        "kitchen",
        "POST",
        "/restaurants/{restaurant_id}/open",
        RESTAURANT_OWNER,
        f"/restaurants/{RESTAURANT}/open",
    ),
    Route(
        "kitchen",
        "POST",
        "/restaurants/{restaurant_id}/close",
        RESTAURANT_OWNER,
        f"/restaurants/{RESTAURANT}/close",
    ),
    Route(
        "kitchen",
        "PUT",
        "/restaurants/{restaurant_id}/menu",
        RESTAURANT_OWNER,
        f"/restaurants/{RESTAURANT}/menu",
        {"menu": ["pizza"]},
    ),
    Route(
        "kitchen",
        "GET",
        "/restaurants/{restaurant_id}",
        RESTAURANT_OWNER,
        f"/restaurants/{RESTAURANT}",
    ),
    Route("kitchen", "GET", "/tickets/{order_id}", RESTAURANT_OWNER, "/tickets/{ticket}"),
    # accounting
    Route(
        "accounting",
        "POST",
        "/accounts",
        OPS_ONLY,
        body={"consumer_id": CUSTOMER, "credit_limit_cents": 10_000},
    ),
    Route(
        "accounting",
        "POST",
        "/accounts/{consumer_id}/block",
        OPS_ONLY,
        f"/accounts/{CUSTOMER}/block",
        {"reason": "test"},
    ),
    Route(
        "accounting",
        "POST",
        "/accounts/{consumer_id}/unblock",
        OPS_ONLY,
        f"/accounts/{CUSTOMER}/unblock",
    ),
    Route("accounting", "GET", "/accounts/{consumer_id}", CUSTOMER_OWNER, f"/accounts/{CUSTOMER}"),
    # the query API
    Route("query", "GET", "/orders/{order_id}", BOTH_OWNERS, "/orders/{order}"),
    Route("query", "GET", "/orders/{order_id}/timeline", BOTH_OWNERS, "/orders/{order}/timeline"),
    Route("query", "GET", "/orders", CUSTOMER_OWNER, f"/orders?customer_id={CUSTOMER}"),
    Route(
        "query",
        "GET",
        "/consumers/{consumer_id}/orders",
        CUSTOMER_OWNER,
        f"/consumers/{CUSTOMER}/orders",
    ),
    Route("query", "GET", "/tickets/{order_id}", RESTAURANT_OWNER, "/tickets/{ticket}"),
    Route("query", "GET", "/tickets", RESTAURANT_OWNER, f"/tickets?restaurant_id={RESTAURANT}"),
    Route("query", "GET", "/sagas/stuck", OPS_ONLY, "/sagas/stuck?older_than=1"),
    Route("query", "GET", "/projections", OPS_ONLY),
]


def call(stack: Stack, route: Route, caller: str, via: str = "direct") -> httpx.Response:
    who = CALLERS[caller]
    headers = {} if who is None else bearer(who[0], *who[1])
    path = (route.url or route.path).format(order=stack.order_id, ticket=stack.ticket_id)
    return httpx.request(
        route.method,
        f"{stack.url(route.service, via)}{path}",
        json=route.body,
        headers=headers,
        timeout=30,
    )


def test_the_matrix_has_every_protected_route_of_every_api(stack: Stack) -> None:
    for service in SERVICES:
        document = httpx.get(f"{stack.urls[service]}/openapi.json").json()
        served = {
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
            if path not in PUBLIC
        }
        listed = {(r.method, r.path) for r in ROUTES if r.service == service}
        assert served == listed, service


@pytest.mark.parametrize("via", ["direct", "gateway"])
@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.service} {r.method} {r.path}")
def test_authorization_matrix(stack: Stack, route: Route, caller: str, via: str) -> None:
    response = call(stack, route, caller, via)
    if caller == "none":
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer ")
    elif allowed(route.rule, caller):
        # Allowed: the command or query ran (409: it ran into the resource's state).
        assert response.status_code in (200, 201, 409), response.text
    else:
        assert response.status_code == 403, response.text
    if response.status_code in (401, 403):
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code


def test_lists_show_a_customer_or_a_restaurant_only_their_own(stack: Stack) -> None:
    query = stack.urls["query"]
    for subject in (CUSTOMER, OTHER_CUSTOMER):
        page = httpx.get(f"{query}/orders", headers=bearer(subject, "customer")).json()
        assert {order["customer_id"] for order in page["items"]} == {subject}
    everyone = httpx.get(f"{query}/orders", headers=bearer()).json()
    assert {order["customer_id"] for order in everyone["items"]} == {CUSTOMER, OTHER_CUSTOMER}
    for subject in (RESTAURANT, OTHER_RESTAURANT):
        page = httpx.get(f"{query}/tickets", headers=bearer(subject, "restaurant")).json()
        assert {ticket["restaurant_id"] for ticket in page["items"]} == {subject}


def test_a_customer_places_only_their_own_orders(stack: Stack) -> None:
    orders = stack.urls["orders"]
    for subject, expected in ((CUSTOMER, 201), (OTHER_CUSTOMER, 403)):
        placed = httpx.post(
            f"{orders}/orders", json=order_body(), headers=bearer(subject, "customer")
        )
        assert placed.status_code == expected, placed.text


def test_health_the_docs_and_the_contracts_stay_open(stack: Stack) -> None:
    for service, url in stack.urls.items():
        for path in ("/health", "/docs", "/redoc", "/openapi.json"):
            assert httpx.get(f"{url}{path}").status_code == 200, f"{service} {path}"
    for path in ("/asyncapi", "/asyncapi.json"):
        assert httpx.get(f"{stack.urls['query']}{path}").status_code == 200, path


def test_openapi_has_the_bearer_scheme_and_401_403_on_every_protected_operation(
    stack: Stack,
) -> None:
    for service, url in stack.urls.items():
        document = httpx.get(f"{url}/openapi.json").json()
        scheme = document["components"]["securitySchemes"]["bearer"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer"), service
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                where = f"{service} {method} {path}"
                if path in PUBLIC:
                    assert "security" not in operation, where
                    continue
                assert operation["security"] == [{"bearer": []}], where
                for status in ("401", "403"):
                    content = operation["responses"][status]["content"]
                    assert "application/problem+json" in content, where


# -------------------------------------------------------------- token attacks


TARGETS = {
    "orders": "/orders/{order}",
    "consumers": f"/consumers/{CUSTOMER}",
    "kitchen": f"/restaurants/{RESTAURANT}",
    "accounting": f"/accounts/{CUSTOMER}",
    "query": "/orders/{order}",
}


def test_the_attacks_target_a_route_a_valid_token_may_read(stack: Stack) -> None:
    for service, path in TARGETS.items():
        url = f"{stack.urls[service]}{path.format(order=stack.order_id)}"
        assert httpx.get(url, headers=bearer()).status_code == 200, service


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("attack", ATTACKS)
def test_every_token_attack_is_a_401(
    stack: Stack, auth_keys: Path, attack: str, service: str
) -> None:
    token = attack_token(attack, auth_keys)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    url = f"{stack.urls[service]}{TARGETS[service].format(order=stack.order_id)}"
    response = httpx.get(url, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="cqrs-api"')
    if token is None:
        assert "error=" not in challenge  # RFC 6750 3.1: no error code without credentials
    else:
        assert 'error="invalid_token"' in challenge
