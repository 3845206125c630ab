"""End to end: every process of the system running, HTTP command → query API."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.servers import free_port
from tests import processes
from tests.support import bearer, wait_for

ORDER = {
    "customer_id": "customer-e2e",
    "restaurant_id": "restaurant-1",
    "delivery_address": {
        "street": "1 Main St",
        "city": "Springfield",
        "postal_code": "12345",
        "country": "US",
    },
    "line_items": [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}],
}


@pytest.fixture
def system(
    store: dict[str, str], kafka: str, mongo_url: str, mongo_database: str, tmp_path: Path
) -> Iterator[dict]:
    orders_port, query_port = free_port(), free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": mongo_database,
        **store.env("orders"),
        "PROJECTIONS_GROUP_ID": f"projections-{uuid.uuid4().hex[:8]}",
        "READ_YOUR_WRITES_TIMEOUT": "10",
    }
    running = [
        processes.api("orders-api", "write_side.orders.api:create_app", orders_port, env, tmp_path),
        processes.relay(env, tmp_path),
        processes.projections_worker(env, tmp_path),
        processes.api("query-api", "read_side.api:create_app", query_port, env, tmp_path),
    ]
    urls = {"orders": f"http://127.0.0.1:{orders_port}", "query": f"http://127.0.0.1:{query_port}"}
    try:
        for url in urls.values():
            try:
                wait_for(
                    lambda url=url: httpx.get(f"{url}/health").raise_for_status(),
                    timeout=60,
                    ignore=(httpx.TransportError, httpx.HTTPStatusError),
                )
            except TimeoutError as error:
                pytest.fail(f"{url} never became healthy ({error})\n{processes.logs(*running)}")
        yield urls
        if not all(p.alive() for p in running):
            pytest.fail(f"a process died during the test\n{processes.logs(*running)}")
    finally:
        processes.stop_all(running)
    assert all(not p.alive() for p in running)


def read_with_token(url: str, token: str) -> httpx.Response:
    """The query API waits for the token itself; a 503 only means 'ask again'."""

    def attempt() -> httpx.Response | None:
        response = httpx.get(url, headers={**bearer(), "X-Consistency-Token": token}, timeout=15)
        return None if response.status_code == 503 else response

    return wait_for(attempt, timeout=60, interval=0.2)


def test_a_placed_order_shows_in_the_query_api_with_its_token(system):
    placed = httpx.post(f"{system['orders']}/orders", json=ORDER, headers=bearer())
    assert placed.status_code == 201, placed.text
    command = placed.json()

    response = read_with_token(
        f"{system['query']}/orders/{command['order_id']}", command["consistency_token"]
    )
    assert response.status_code == 200, response.text
    order = response.json()
    assert order["status"] == "APPROVAL_PENDING"
    assert order["total_cents"] == 2500

    # Progress is recorded just after the documents: the headers catch up, never lead.
    def caught_up() -> httpx.Headers | None:
        url = f"{system['query']}/orders/{command['order_id']}"
        headers = httpx.get(url, headers=bearer()).headers
        return headers if int(headers["X-Read-Model-Position"]) >= command["position"] else None

    headers = wait_for(caught_up, timeout=30)
    assert float(headers["X-Read-Model-Age"]) >= 0

    listing = read_with_token(
        f"{system['query']}/orders?customer_id=customer-e2e", command["consistency_token"]
    )
    assert [o["order_id"] for o in listing.json()["items"]] == [command["order_id"]]

    # No saga participant runs here: the order stays locked while pending.
    refused = httpx.post(
        f"{system['orders']}/orders/{command['order_id']}/cancel",
        json={"reason": "changed my mind"},
        headers=bearer(),
    )
    assert refused.status_code == 409, refused.text
    assert "saga is still in progress" in refused.json()["detail"]


def test_an_invalid_command_never_reaches_the_read_model(system):
    invalid = {
        **ORDER,
        "customer_id": "customer-ghost",
        "line_items": [{"menu_item_id": "pizza", "quantity": 0, "unit_price_cents": 1}],
    }
    rejected = httpx.post(f"{system['orders']}/orders", json=invalid, headers=bearer())
    assert rejected.status_code == 422
    assert rejected.json()["errors"][0]["loc"] == ["body", "line_items", 0, "quantity"]

    valid = httpx.post(
        f"{system['orders']}/orders",
        json={**ORDER, "customer_id": "customer-ghost"},
        headers=bearer(),
    )
    listing = read_with_token(
        f"{system['query']}/orders?customer_id=customer-ghost", valid.json()["consistency_token"]
    )
    assert len(listing.json()["items"]) == 1
