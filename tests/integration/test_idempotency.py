"""Idempotency-Key on the command APIs: one effect, the first answer again.

On the kernel's example API (tallies): in-process for the rules, and two real processes
on one store for copies that arrive at once at different processes; SQLite and
PostgreSQL. Then the group commit's side: a claimed key is stored with the command's
events, once.
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    select,
    update,
)

from devstack.servers import free_port
from kernel.application import open_application
from kernel.errors import NotFound
from kernel.group_commit import _current, _State, claiming
from kernel.idempotency import REPLAYED_HEADER
from kernel.store import IdempotencyClaim, IdempotencyConflict
from tests import processes
from tests.batching import HeldWriter, outcome
from tests.kernel_example.api import TalliesSettings, create_app
from tests.kernel_example.application import Saved, TalliesApplication
from tests.stores import Store
from tests.support import bearer, wait_for

PROJECT = Path(__file__).resolve().parents[2]
"""Where the tallies API's module is (the API runs in processes of its own)."""


def settings(store: Store) -> TalliesSettings:
    return TalliesSettings(
        tallies_database_url=store.url("tallies"), tallies_database_schema=store.schema
    )


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(settings(store)), headers=bearer()) as test_client:
        assert test_client.post("/tallies", json={"name": "t"}).status_code == 201
        yield test_client


def events_stored(client: TestClient) -> int:
    return client.app.state.tallies.recorder.max_notification_id() or 0


def add(client: TestClient, key: str, amount: int = 1, **headers: str) -> httpx.Response:
    return client.post(
        "/tallies/t/add", json={"amount": amount}, headers={"Idempotency-Key": key, **headers}
    )


def total(client: TestClient) -> int:
    return client.get("/tallies/t").json()["total"]


def test_a_repeated_request_gets_the_first_answer_and_has_one_effect(client):
    first = add(client, "add-1")
    stored = events_stored(client)

    again = add(client, "add-1")

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers[REPLAYED_HEADER] == "true"
    assert REPLAYED_HEADER not in first.headers
    assert events_stored(client) == stored
    assert total(client) == 1


def test_another_key_is_another_command(client):
    add(client, "add-1")
    second = add(client, "add-2")

    assert second.status_code == 200
    assert REPLAYED_HEADER not in second.headers
    assert total(client) == 2


def test_without_a_key_every_request_is_a_command(client):
    for _ in range(2):
        assert client.post("/tallies/t/add", json={"amount": 1}).status_code == 200

    assert total(client) == 2


def test_the_same_key_with_another_body_is_refused_and_changes_nothing(client):
    add(client, "add-1")
    stored = events_stored(client)

    other = add(client, "add-1", amount=5)

    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert "another request" in other.json()["detail"]
    assert events_stored(client) == stored
    assert total(client) == 1


def test_the_same_key_on_another_route_is_refused(client):
    add(client, "key-1")

    other = client.post(
        "/tallies/t/close", json={"reason": "done"}, headers={"Idempotency-Key": "key-1"}
    )

    assert other.status_code == 422
    assert client.get("/tallies/t").json()["closed"] is False


def test_a_key_belongs_to_its_caller_another_caller_is_not_answered_with_it(client):
    mine = add(client, "add-1", **bearer("ops-1", "ops"))

    theirs = add(client, "add-1", **bearer("ops-2", "ops"))

    assert theirs.status_code == 200
    assert REPLAYED_HEADER not in theirs.headers
    assert theirs.json()["version"] == mine.json()["version"] + 1
    assert total(client) == 2


def test_a_request_refused_for_its_token_runs_nothing(client):
    add(client, "add-1")
    stored = events_stored(client)

    forged = add(client, "add-1", Authorization="Bearer not-a-token")

    assert forged.status_code == 401
    assert REPLAYED_HEADER not in forged.headers
    assert events_stored(client) == stored


def test_a_command_that_failed_records_no_key_and_may_be_sent_again(client):
    headers = {"Idempotency-Key": "add-big"}
    refused = client.post("/tallies/t/add", json={"amount": -1}, headers=headers)
    assert refused.status_code == 409  # a tally only grows

    accepted = client.post("/tallies/t/add", json={"amount": -1}, headers=headers)

    assert accepted.status_code == 409  # run again (nothing was kept), refused again
    assert REPLAYED_HEADER not in accepted.headers


def test_a_copy_that_would_fail_now_still_gets_the_first_answer(client):
    close = {"reason": "done"}
    headers = {"Idempotency-Key": "close-1"}
    first = client.post("/tallies/t/close", json=close, headers=headers)
    stored = events_stored(client)

    # Alone, a second close is a 409 (the tally is closed already).
    again = client.post("/tallies/t/close", json=close, headers=headers)

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers[REPLAYED_HEADER] == "true"
    assert events_stored(client) == stored


def test_an_invalid_key_is_a_400(client):
    stored = events_stored(client)
    for key in ("", "x" * 256, "with space"):
        response = add(client, key)
        assert response.status_code == 400, key
        assert response.headers["content-type"] == "application/problem+json"
    assert events_stored(client) == stored


def test_an_expired_key_runs_the_command_again(store, monkeypatch):
    monkeypatch.setenv("IDEMPOTENCY_KEY_TTL", "0")
    with TestClient(create_app(settings(store)), headers=bearer()) as expiring:
        expiring.post("/tallies", json={"name": "t"})
        first = add(expiring, "add-1")
        again = add(expiring, "add-1")

        assert again.status_code == 200
        assert again.json()["version"] == first.json()["version"] + 1
        assert total(expiring) == 2


def forget_answers(client: TestClient) -> None:
    """The store as an API killed between a command's commit and keeping its answer
    leaves it: the key is recorded with the command's events, its answer is not."""
    recorder = client.app.state.tallies.recorder
    table = recorder.idempotency_table

    def answers() -> list[Any]:
        with recorder.transaction(commit=False) as session:
            return list(session.connection().execute(select(table.c.status)).scalars())

    wait_for(lambda: None not in answers(), timeout=10)  # kept by the answer thread
    with recorder.transaction(commit=True) as session:
        session.connection().execute(update(table).values(status=None, body=None))


def test_a_copy_of_a_request_whose_answer_is_not_kept_yet_is_told_to_retry(store, monkeypatch):
    monkeypatch.setenv("IDEMPOTENCY_WAIT", "0.2")
    with TestClient(create_app(settings(store)), headers=bearer()) as api:
        api.post("/tallies", json={"name": "t"})
        add(api, "add-1")
        forget_answers(api)
        stored = events_stored(api)

        again = add(api, "add-1")

        assert again.status_code == 409
        assert again.json()["title"] == "Request in progress"
        assert again.headers["Retry-After"] == "1"
        assert (events_stored(api), total(api)) == (stored, 1)


def test_a_copy_of_a_request_whose_answer_was_lost_is_told_so_with_what_it_saved(
    store, monkeypatch
):
    """Not "in progress" until the key expires: the answer will never come."""
    monkeypatch.setenv("IDEMPOTENCY_ANSWER_LOST_AFTER", "0")
    with TestClient(create_app(settings(store)), headers=bearer()) as api:
        api.post("/tallies", json={"name": "t"})
        first = add(api, "add-1").json()
        forget_answers(api)
        stored = events_stored(api)

        again = add(api, "add-1")
        other = add(api, "add-1", amount=2)

        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["title"] == "Answer lost"
        assert again.json()["saved"] == [{"id": first["tally_id"], "version": first["version"]}]
        assert "Retry-After" not in again.headers
        assert other.status_code == 422  # another request with the key: as before
        assert (events_stored(api), total(api)) == (stored, 1)


def test_the_header_is_in_every_post_operation_of_the_openapi(client):
    paths = client.get("/openapi.json").json()["paths"]

    posts = [operations["post"] for operations in paths.values() if "post" in operations]
    assert len(posts) == 3
    for post in posts:
        assert "Idempotency-Key" in [p["name"] for p in post.get("parameters", [])]


# Copies at once, at two processes


@pytest.fixture
def two_processes(store: Store, tmp_path: Path) -> Iterator[list[str]]:
    urls, running = [], []
    env = {**store.env("tallies"), "PYTHONPATH": str(PROJECT)}
    try:
        for index in range(2):
            port = free_port()
            running.append(
                processes.api(
                    f"tallies-api-{index}",
                    "tests.kernel_example.api:create_app",
                    port,
                    env,
                    tmp_path,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_for(lambda url=url: _healthy(url), timeout=30, interval=0.1)
        yield urls
    finally:
        processes.stop_all(running)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def test_copies_sent_at_once_to_two_processes_have_one_effect(two_processes):
    async def send_copies() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, headers=bearer()) as client:
            started = await client.post(f"{two_processes[0]}/tallies", json={"name": "t"})
            assert started.status_code == 201
            return await asyncio.gather(
                *(
                    client.post(
                        f"{two_processes[n % 2]}/tallies/t/add",
                        json={"amount": 1},
                        headers={"Idempotency-Key": "the-same-add"},
                    )
                    for n in range(20)
                )
            )

    answers = asyncio.run(send_copies())

    assert {answer.status_code for answer in answers} == {200}, [a.text for a in answers]
    assert len({answer.text for answer in answers}) == 1
    assert sum(REPLAYED_HEADER not in answer.headers for answer in answers) == 1
    with httpx.Client(headers=bearer()) as client:
        tally = client.get(f"{two_processes[1]}/tallies/t").json()
    assert (tally["total"], tally["version"]) == (1, 2)


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
    record = tallies.recorder.find_idempotency_key("k")
    assert record is not None and record.status is None  # the answer is the API's to keep
    assert record.saved == ((str(answer.tally_id), 2),)
    assert record.claimed_at is not None and abs(record.claimed_at - time.time()) < 60


def test_a_command_detached_from_its_batch_records_its_key_and_what_it_saved(tallies):
    tallies.start_tally("t")
    tallies.group_commit.max_turn = 0.05

    def add_once_detached() -> Saved:
        turn = _current.get()
        assert turn is not None
        tally = tallies.get_tally("t")
        wait_for(lambda: turn.state is _State.DETACHED, timeout=10)
        tally.add(5)
        return tallies._save(tally)

    answer, request = claimed("k", lambda: tallies.group_commit.run(add_once_detached))()

    assert request.recorded
    record = tallies.recorder.find_idempotency_key("k")
    assert record is not None and record.saved == ((str(answer.tally_id), 2),)


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


def test_a_store_made_before_keys_recorded_what_they_saved_is_brought_up_to_date(store):
    """A project updated from the template opens the store it has: the key table gains
    its new columns (nullable) when a process opens the store."""
    engine = create_engine(store.url("tallies"))
    with engine.begin() as connection:
        Table(
            "tallies_idempotency_keys",
            MetaData(schema=store.schema),
            Column("key", String(400), primary_key=True),
            Column("fingerprint", String(64), nullable=False),
            Column("expires_at", Float, nullable=False),
            Column("status", Integer),
            Column("content_type", String(100)),
            Column("body", LargeBinary),
        ).create(connection)
    engine.dispose()
    app = open_application(TalliesApplication, store.url("tallies"), store.schema)
    try:
        started = app.start_tally("t")
        claimed("k", lambda: app.add_to_tally("t", 1))()

        record = app.recorder.find_idempotency_key("k")
        assert record is not None and record.saved == ((str(started.tally_id), 2),)
    finally:
        app.close()
