"""Idempotency-Key on the command APIs: one effect, the first answer again.

In-process (TestClient) for the rules, and two real processes of the orders API on one
store for copies that arrive at once at different processes; SQLite and PostgreSQL.
"""

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from devstack.servers import free_port
from tests import processes
from tests.batching import HeldWriter, outcome
from tests.examples import PLACE_ORDER
from tests.kernel_example.application import TalliesApplication
from tests.stores import Store, orders_settings
from tests.support import bearer, wait_for
from write_side.kernel.application import open_application
from write_side.kernel.errors import NotFound
from write_side.kernel.group_commit import claiming
from write_side.kernel.idempotency import REPLAYED_HEADER
from write_side.kernel.store import IdempotencyClaim, IdempotencyConflict
from write_side.orders.api import create_app


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(orders_settings(store)), headers=bearer()) as test_client:
        yield test_client


def events_stored(client: TestClient) -> int:
    return client.app.state.orders.recorder.max_notification_id() or 0


def place(client: TestClient, key: str, body: dict = PLACE_ORDER, **headers: str) -> httpx.Response:
    return client.post("/orders", json=body, headers={"Idempotency-Key": key, **headers})


def test_a_repeated_request_gets_the_first_answer_and_has_one_effect(client):
    first = place(client, "order-1")
    stored = events_stored(client)

    again = place(client, "order-1")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers[REPLAYED_HEADER] == "true"
    assert REPLAYED_HEADER not in first.headers
    assert events_stored(client) == stored


def test_another_key_is_another_command(client):
    first = place(client, "order-1")
    second = place(client, "order-2")

    assert second.status_code == 201
    assert second.json()["order_id"] != first.json()["order_id"]


def test_the_same_key_with_another_body_is_refused_and_changes_nothing(client):
    place(client, "order-1")
    stored = events_stored(client)

    other = place(client, "order-1", {**PLACE_ORDER, "customer_id": "someone-else"})

    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert "another request" in other.json()["detail"]
    assert events_stored(client) == stored


def test_a_key_belongs_to_its_caller_another_caller_is_not_answered_with_it(client):
    customer = PLACE_ORDER["customer_id"]
    mine = place(client, "order-1", **bearer(customer, "customer"))

    ops = place(client, "order-1", **bearer("ops-2", "ops"))

    assert ops.status_code == 201
    assert REPLAYED_HEADER not in ops.headers
    assert ops.json()["order_id"] != mine.json()["order_id"]


def test_a_request_refused_for_its_token_runs_nothing_and_answers_nothing_kept(client):
    place(client, "order-1")
    stored = events_stored(client)

    forged = place(client, "order-1", Authorization="Bearer not-a-token")

    assert forged.status_code == 401
    assert REPLAYED_HEADER not in forged.headers
    assert events_stored(client) == stored


def test_the_same_key_on_another_route_is_refused(client):
    order_id = place(client, "key-1").json()["order_id"]

    other = client.post(
        f"/orders/{order_id}/cancel", json={"reason": "r"}, headers={"Idempotency-Key": "key-1"}
    )

    assert other.status_code == 422


def test_a_command_that_failed_records_no_key_and_may_be_sent_again(client):
    order_id = place(client, "order").json()["order_id"]
    cancel = {"reason": "changed my mind"}
    headers = {"Idempotency-Key": "cancel-1"}

    refused = client.post(f"/orders/{order_id}/cancel", json=cancel, headers=headers)
    assert refused.status_code == 409  # a pending order cannot be cancelled yet
    client.app.state.orders.approve_order(uuid.UUID(order_id))

    accepted = client.post(f"/orders/{order_id}/cancel", json=cancel, headers=headers)

    assert accepted.status_code == 200
    assert REPLAYED_HEADER not in accepted.headers


def test_a_copy_that_would_fail_now_still_gets_the_first_answer(client):
    order_id = place(client, "order").json()["order_id"]
    client.app.state.orders.approve_order(uuid.UUID(order_id))
    cancel = {"reason": "changed my mind"}
    headers = {"Idempotency-Key": "cancel-1"}
    first = client.post(f"/orders/{order_id}/cancel", json=cancel, headers=headers)
    stored = events_stored(client)

    # Alone, a second cancel is a 409 (the order is cancelled already).
    again = client.post(f"/orders/{order_id}/cancel", json=cancel, headers=headers)

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers[REPLAYED_HEADER] == "true"
    assert events_stored(client) == stored


def test_an_invalid_key_is_a_400(client):
    for key in ("", "x" * 256, "with space"):
        response = place(client, key)
        assert response.status_code == 400, key
        assert response.headers["content-type"] == "application/problem+json"
    assert events_stored(client) == 0


def test_an_expired_key_runs_the_command_again(store, monkeypatch):
    monkeypatch.setenv("IDEMPOTENCY_KEY_TTL", "0")
    with TestClient(create_app(orders_settings(store)), headers=bearer()) as expiring:
        first = place(expiring, "order-1")
        again = place(expiring, "order-1")

    assert again.status_code == 201
    assert again.json()["order_id"] != first.json()["order_id"]


def test_the_header_is_in_every_post_operation_of_the_openapi(client):
    paths = client.get("/openapi.json").json()["paths"]

    posts = [operations["post"] for operations in paths.values() if "post" in operations]
    assert posts
    for post in posts:
        assert "Idempotency-Key" in [p["name"] for p in post.get("parameters", [])]


# Copies at once, at two processes


@pytest.fixture
def two_processes(store: Store, tmp_path: Path) -> Iterator[list[str]]:
    urls, running = [], []
    try:
        for index in range(2):
            port = free_port()
            running.append(
                processes.api(
                    f"orders-api-{index}",
                    "write_side.orders.api:create_app",
                    port,
                    store.env("orders"),
                    tmp_path,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_for(lambda url=url: _healthy(url), timeout=30, interval=0.1)
        yield urls
    finally:
        for process in running:
            process.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def test_copies_sent_at_once_to_two_processes_have_one_effect(two_processes):
    async def send_copies() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, headers=bearer()) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{two_processes[n % 2]}/orders",
                        json=PLACE_ORDER,
                        headers={"Idempotency-Key": "the-same-order"},
                    )
                    for n in range(20)
                )
            )

    answers = asyncio.run(send_copies())

    assert {answer.status_code for answer in answers} == {201}, [a.text for a in answers]
    assert len({answer.text for answer in answers}) == 1
    assert sum(REPLAYED_HEADER not in answer.headers for answer in answers) == 1
    order_id = answers[0].json()["order_id"]
    # One order: the log holds one event (its OrderPlaced) and nothing after it.
    with httpx.Client(headers=bearer()) as client:
        order = client.get(f"{two_processes[0]}/orders/{order_id}").json()
    assert order["version"] == 1
    assert answers[0].json()["position"] == 1


# The group commit: a claimed key is stored with the command's events, once


@pytest.fixture
def tallies(store) -> Iterator[TalliesApplication]:
    app = open_application(TalliesApplication, store.url("tallies"), store.schema)
    yield app
    app.close()


def claimed(key: str, command: Callable[[], Any], ttl: float = 60) -> Callable[[], Any]:
    """``command`` run for a request that carries ``key``."""

    def run() -> Any:
        request = claiming(IdempotencyClaim(key, "fingerprint", time.time() + ttl))
        try:
            return command(), request
        except IdempotencyConflict:
            assert request.refused
            raise

    return run


def test_two_commands_claiming_one_key_in_one_batch_store_the_first_only(tallies):
    tallies.start_tally("t")
    before = tallies.recorder.max_notification_id()

    with ThreadPoolExecutor(3) as pool:
        writer = HeldWriter(tallies, pool)
        first = writer.queue(claimed("k", lambda: tallies.add_to_tally("t", 1)))
        copy = writer.queue(claimed("k", lambda: tallies.add_to_tally("t", 1)))
        writer.let_go()
        answer, request = first.result(timeout=60)
        refused = outcome(copy)

    assert request.recorded
    assert isinstance(refused, IdempotencyConflict)
    assert tallies.recorder.max_notification_id() == answer.position == before + 1
    assert tallies.get_tally("t").total == 1
    assert tallies.recorder.find_idempotency_key("k") is not None


def test_a_key_the_store_holds_refuses_the_command_and_its_readers_rerun(tallies, store):
    tallies.start_tally("t")
    other_process = open_application(TalliesApplication, store.url("tallies"), store.schema)
    try:
        claimed("k", lambda: other_process.add_to_tally("t", 1))()
    finally:
        other_process.close()

    with ThreadPoolExecutor(3) as pool:
        writer = HeldWriter(tallies, pool)
        copy = writer.queue(claimed("k", lambda: tallies.add_to_tally("t", 1)))
        reader = writer.queue(lambda: tallies.add_to_tally("t", 10))
        writer.let_go()
        refused = outcome(copy)
        after = reader.result(timeout=60)

    assert isinstance(refused, IdempotencyConflict)
    assert after.version == 3  # built on the stored state, not on the refused copy's
    assert tallies.get_tally("t").total == 11


def test_an_expired_key_is_claimed_again(tallies):
    tallies.start_tally("t")
    claimed("k", lambda: tallies.add_to_tally("t", 1), ttl=-1)()
    assert tallies.recorder.find_idempotency_key("k") is None

    claimed("k", lambda: tallies.add_to_tally("t", 1))()

    assert tallies.get_tally("t").total == 2
    assert tallies.recorder.find_idempotency_key("k") is not None


def test_a_command_that_fails_records_no_key(tallies):
    with pytest.raises(NotFound):
        claimed("k", lambda: tallies.add_to_tally("never-started", 1))()

    assert tallies.recorder.find_idempotency_key("k") is None
