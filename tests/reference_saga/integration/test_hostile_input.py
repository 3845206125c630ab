"""Every input of issue 14's list that gave a 500 (or found no limit), against the real
API processes: each is refused with a 4xx problem document, stores nothing, and leaves
the keep-alive connection serving the next request (408 and 413 close it, on purpose).
"""

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests import processes
from tests.api_headers import request_headers
from tests.http_wire import Answer, Wire
from tests.reference_saga.examples import PLACE_ORDER

# Fixed, not uuid4(): every pytest-xdist worker must collect the same test ids.
AN_ORDER = "0b6c5f0e-6a8f-4b5e-9a53-2d1c3f9e8a71"
BODY_READ_TIMEOUT = 2.0
APPS = {
    "orders": "write_side.orders.api:create_app",
    "consumers": "write_side.consumers.api:create_app",
    "accounting": "write_side.accounting.api:create_app",
    "query": "read_side.api:create_app",
}


class Apis:
    def __init__(self, urls: dict[str, str], stores: Path) -> None:
        self.urls, self.stores = urls, stores

    def wire(self, service: str) -> Wire:
        return Wire(self.urls[service])

    def stored(self, service: str) -> int:
        """Events in the service's store."""
        with sqlite3.connect(self.stores / f"{service}.db") as connection:
            tables = [
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
                if "event" in name
            ]
            return sum(
                connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables
            )


@pytest.fixture(scope="module")
def apis(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, mongo_url: str
) -> Iterator[Apis]:
    tmp = tmp_path_factory.mktemp("hostile")
    database = f"test_{uuid.uuid4().hex[:12]}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": database,
        "BODY_READ_TIMEOUT": str(BODY_READ_TIMEOUT),
        **{f"{s.upper()}_DATABASE_URL": f"sqlite:///{tmp}/{s}.db" for s in APPS if s != "query"},
    }
    try:
        with processes.running_apis(APPS, env, tmp) as (urls, _):
            yield Apis(urls, tmp)
    finally:
        MongoClient(mongo_url).drop_database(database)


def refused(answer: Answer, status: int, wire: Wire) -> dict[str, Any]:
    """The answer is a problem of that status, and the connection serves the next request."""
    problem = answer.problem(status)
    assert wire.request("GET", "/health").status == 200
    return problem


def raw(document: dict[str, Any], **replace: str) -> bytes:
    """``document`` as JSON with ``"@name@"`` placeholders replaced by raw JSON text."""
    text = json.dumps(document)
    for name, value in replace.items():
        text = text.replace(f'"@{name}@"', value)
    return text.encode()


ORDER = PLACE_ORDER
HEADERS = request_headers


# ----------------------------------------------------------------- the six 500s


def test_nan_credit_limit_is_422(apis: Apis) -> None:
    before = apis.stored("accounting")
    with apis.wire("accounting") as wire:
        body = b'{"consumer_id":"q1","credit_limit_cents":NaN}'
        answer = wire.request("POST", "/accounts", body, HEADERS("accounting"))
        problem = refused(answer, 422, wire)
        assert problem["errors"][0]["type"] == "json_invalid"
        assert wire.request("GET", "/accounts/q1", headers=HEADERS("accounting")).status == 404
    assert apis.stored("accounting") == before


@pytest.mark.parametrize(("field", "value"), [("quantity", "NaN"), ("unit_price_cents", "1e400")])
def test_non_finite_numbers_in_an_order_are_422(apis: Apis, field: str, value: str) -> None:
    before = apis.stored("orders")
    item = {**ORDER["line_items"][0], field: "@bad@"}
    body = raw({**ORDER, "line_items": [item]}, bad=value)
    with apis.wire("orders") as wire:
        problem = refused(wire.request("POST", "/orders", body, HEADERS("orders")), 422, wire)
        json.dumps(problem, allow_nan=False)  # what it echoes can be encoded
    assert apis.stored("orders") == before


def test_a_lone_surrogate_in_a_consumers_name_is_422(apis: Apis) -> None:
    before = apis.stored("consumers")
    body = b'{"consumer_id": "cust-s", "name": "a\\ud800b"}'
    with apis.wire("consumers") as wire:
        refused(wire.request("POST", "/consumers", body, HEADERS("consumers")), 422, wire)
        assert wire.request("GET", "/consumers/cust-s", headers=HEADERS("consumers")).status == 404
    assert apis.stored("consumers") == before


def test_a_lone_surrogate_in_an_orders_street_is_422(apis: Apis) -> None:
    before = apis.stored("orders")
    address = {**ORDER["delivery_address"], "street": "@bad@"}
    body = raw({**ORDER, "delivery_address": address}, bad='"1 Main St \\udc00"')
    with apis.wire("orders") as wire:
        refused(wire.request("POST", "/orders", body, HEADERS("orders")), 422, wire)
    assert apis.stored("orders") == before


@pytest.mark.parametrize(
    "token",
    [
        f"orders:{10**30}:{AN_ORDER}:{2**63}",
        f"orders:1:{AN_ORDER}:{2**63}",
        f"orders:{2**63}:{AN_ORDER}:1",
        f"orders:{2**64}:{AN_ORDER}:{2**64}",
    ],
)
def test_a_huge_consistency_token_is_400(apis: Apis, token: str) -> None:
    headers = {**HEADERS("query"), "X-Consistency-Token": token}
    with apis.wire("query") as wire:
        for path in (f"/orders/{uuid.uuid4()}", "/orders", f"/orders/{uuid.uuid4()}/timeline"):
            problem = refused(wire.request("GET", path, headers=headers), 400, wire)
            assert "malformed consistency token" in problem["detail"]
        by_query = f"/orders?consistency_token={token}"
        refused(wire.request("GET", by_query, headers=HEADERS("query")), 400, wire)


# ------------------------------------------------------------------- the limits


def test_a_50_mb_order_is_413_at_once(apis: Apis) -> None:
    before = apis.stored("orders")
    padding = " " * 50_000_000
    body = json.dumps(ORDER).encode()[:-1] + padding.encode() + b"}"
    with apis.wire("orders") as wire:
        started = time.monotonic()
        head = {**HEADERS("orders"), "Content-Type": "application/json"}
        head["Content-Length"] = str(len(body))
        wire.sock.sendall(wire.head("POST", "/orders", head) + body[:65536])
        wire.answer().problem(413)
        assert time.monotonic() - started < 2
        assert wire.closed_by_server(within=2)
    assert apis.stored("orders") == before


def test_announcing_5_mb_and_sending_nothing_is_refused_and_closed(apis: Apis) -> None:
    with apis.wire("orders") as wire:
        started = time.monotonic()
        head = {**HEADERS("orders"), "Content-Type": "application/json"}
        wire.sock.sendall(wire.head("POST", "/orders", {**head, "Content-Length": "5000000"}))
        wire.answer().problem(413)  # over the limit: no need to wait for it
        assert wire.closed_by_server(within=2)
    with apis.wire("orders") as wire:  # under the limit: waited for, up to the timeout
        started = time.monotonic()
        wire.sock.sendall(wire.head("POST", "/orders", {**head, "Content-Length": "500000"}))
        wire.answer().problem(408)
        assert wire.closed_by_server(within=1)
        assert time.monotonic() - started < BODY_READ_TIMEOUT + 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_100000_line_items_are_413_fast_while_health_answers(apis: Apis, chunked: bool) -> None:
    before = apis.stored("orders")
    body = json.dumps({**ORDER, "line_items": ORDER["line_items"][:1] * 100_000}).encode()
    url = apis.urls["orders"]
    slowest_health = 0.0
    done = threading.Event()

    def poll_health() -> None:
        nonlocal slowest_health
        with httpx.Client(base_url=url, headers=HEADERS("orders")) as client:
            while not done.is_set():
                started = time.monotonic()
                status = client.get("/health").status_code
                slowest_health = max(slowest_health, time.monotonic() - started)
                if status != 200:
                    slowest_health = float("inf")

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        with apis.wire("orders") as wire:
            started = time.monotonic()
            head = {**HEADERS("orders"), "Content-Type": "application/json"}
            if chunked:
                head["Transfer-Encoding"] = "chunked"
                wire.sock.sendall(wire.head("POST", "/orders", head))
                chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
                wire.send_until_answered(  # past 1 MiB if need be; never the end
                    f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks
                )
            else:
                head["Content-Length"] = str(len(body))
                wire.sock.sendall(wire.head("POST", "/orders", head) + body[:65536])
            wire.answer().problem(413)
            elapsed = time.monotonic() - started
            assert wire.closed_by_server(within=2)
    finally:
        done.set()
        poller.join()
    assert elapsed < 1.5, elapsed
    assert slowest_health < 0.5, slowest_health
    assert apis.stored("orders") == before


# ------------------------------------------------------------------ lax input


@pytest.mark.parametrize("value", ["true", '"100"', "2.0", "1e2"])
def test_only_a_json_integer_is_an_integer(apis: Apis, value: str) -> None:
    before = {service: apis.stored(service) for service in ("orders", "accounting")}
    item = {**ORDER["line_items"][0], "quantity": "@bad@"}
    order = raw({**ORDER, "line_items": [item]}, bad=value)
    account = raw({"consumer_id": "lax", "credit_limit_cents": "@bad@"}, bad=value)
    with apis.wire("orders") as wire:
        problem = refused(wire.request("POST", "/orders", order, HEADERS("orders")), 422, wire)
        assert problem["errors"][0]["loc"] == ["body", "line_items", 0, "quantity"]
    with apis.wire("accounting") as wire:
        answer = wire.request("POST", "/accounts", account, HEADERS("accounting"))
        problem = refused(answer, 422, wire)
        assert problem["errors"][0]["loc"] == ["body", "credit_limit_cents"]
    assert {service: apis.stored(service) for service in before} == before


@pytest.mark.parametrize("value", [str(2**63), str(2**64), str(10**30), "-1", "1001"])
def test_out_of_range_integers_are_422(apis: Apis, value: str) -> None:
    before = apis.stored("orders")
    item = {**ORDER["line_items"][0], "quantity": "@bad@"}
    with apis.wire("orders") as wire:
        body = raw({**ORDER, "line_items": [item]}, bad=value)
        refused(wire.request("POST", "/orders", body, HEADERS("orders")), 422, wire)
    assert apis.stored("orders") == before


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", json.dumps(ORDER).encode()),
        ("application/x-www-form-urlencoded", b"customer_id=c&restaurant_id=r"),
        ("application/xml", b"<order><customer_id>c</customer_id></order>"),
    ],
)
def test_a_body_that_is_not_json_is_415(apis: Apis, content_type: str, body: bytes) -> None:
    before = apis.stored("orders")
    with apis.wire("orders") as wire:
        answer = wire.request("POST", "/orders", body, HEADERS("orders"), content_type=content_type)
        refused(answer, 415, wire)
    assert apis.stored("orders") == before


@pytest.mark.parametrize("path", ["/orders", "/tickets", "/consumers/c/orders"])
def test_an_empty_token_or_cursor_is_the_same_as_none(apis: Apis, path: str) -> None:
    with apis.wire("query") as wire:
        plain = wire.request("GET", path, headers=HEADERS("query"))
        assert plain.status == 200, plain.body
        empty_cursor = wire.request("GET", f"{path}?cursor=", headers=HEADERS("query"))
        assert (empty_cursor.status, empty_cursor.json()) == (200, plain.json())
        if path != "/tickets":
            headers = {**HEADERS("query"), "X-Consistency-Token": ""}
            empty_token = wire.request("GET", f"{path}?consistency_token=", headers=headers)
            assert (empty_token.status, empty_token.json()) == (200, plain.json())
