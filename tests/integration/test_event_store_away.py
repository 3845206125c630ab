"""Degraded, not broken (issue 17, item 3), on the kernel's example API: while its event
store is away (a PostgreSQL cluster of the test's own, stopped and started by PID; a
locked SQLite file) the command API answers 503 with Retry-After and a problem body within
its timeout, and recovers by itself once the store is back.
"""

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests import postgres_cluster, processes
from tests.kernel_example.api import TalliesSettings, create_app
from tests.postgres_cluster import PostgresCluster
from tests.support import assert_unavailable, bearer

MONGODB_TIMEOUT = 1.0
EVENT_STORE_TIMEOUT = 1.0
MARGIN = 1.5
"""Seconds an answer may take beyond the timeout that bounds it (a loaded machine)."""


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    yield from postgres_cluster.private_cluster()


def test_a_command_api_answers_503_while_its_postgresql_restarts_and_recovers_by_itself(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    postgres.start()
    env = {"TALLIES_DATABASE_URL": postgres.url, "EVENT_STORE_TIMEOUT": str(EVENT_STORE_TIMEOUT)}
    url, api = processes.started_api(
        "tallies-api", "tests.kernel_example.api:create_app", env, tmp_path
    )
    name = f"t{uuid.uuid4().hex[:8]}"
    bound = EVENT_STORE_TIMEOUT + MARGIN
    added = 0
    try:
        with httpx.Client(base_url=url, headers=bearer(), timeout=30) as client:

            def add(**headers: str) -> httpx.Response:
                return client.post(f"/tallies/{name}/add", json={"amount": 1}, headers=headers)

            assert client.post("/tallies", json={"name": name}).status_code == 201
            assert add().status_code == 200
            added += 1

            # A restart between two commands: the pool's connections are dead, and the
            # first command after it gets a fresh one.
            postgres.stop()
            postgres.start()
            assert add().status_code == 200, processes.logs(api)
            added += 1

            postgres.stop()
            assert_unavailable(add(), bound)
            assert_unavailable(client.get(f"/tallies/{name}"), bound)
            assert_unavailable(client.post("/tallies", json={"name": "another"}), bound)
            assert_unavailable(add(**{"Idempotency-Key": "away-1"}), bound)

            postgres.start()
            assert add().status_code == 200, processes.logs(api)
            added += 1
            assert add(**{"Idempotency-Key": "away-1"}).status_code == 200  # kept nothing
            added += 1
            tally = client.get(f"/tallies/{name}").json()
            assert tally["total"] == added  # the refused commands changed nothing
            assert client.get("/tallies/another").status_code == 404
        assert api.alive(), api.log()
    finally:
        api.stop()
        postgres.stop()


def test_a_command_api_answers_503_while_its_sqlite_file_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENT_STORE_TIMEOUT", "0.5")
    database = tmp_path / "tallies.db"
    settings = TalliesSettings(tallies_database_url=f"sqlite:///{database}")
    with TestClient(create_app(settings), headers=bearer()) as client:
        assert client.post("/tallies", json={"name": "t"}).status_code == 201
        other_writer = sqlite3.connect(database, isolation_level=None)
        try:
            other_writer.execute("BEGIN IMMEDIATE")  # holds the write lock
            started = time.monotonic()
            refused = client.post("/tallies/t/add", json={"amount": 1})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert time.monotonic() - started < 0.5 + MARGIN
            other_writer.execute("ROLLBACK")
        finally:
            other_writer.close()
        assert client.post("/tallies/t/add", json={"amount": 1}).status_code == 200
        assert client.get("/tallies/t").json()["total"] == 1


# ---------------------------------------------------------- the projections worker waits
