"""Session-wide servers for the tests: real processes on free ports, stopped by PID."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from pymongo import AsyncMongoClient

from devstack.identity import ensure_keys, jwks_url
from devstack.servers import KafkaBroker, MongoServer, ensure_secantus_venv
from tests import support
from tests.stores import POSTGRES_URL, Store

# The tests' broker is the local one, which answers an empty fetch at once: consumers
# made here, and the processes the tests start, pause after one as `cqrs run`'s do.
os.environ.setdefault("KAFKA_EMPTY_FETCH_INTERVAL", "0.01")


@pytest.fixture(scope="session", autouse=True)
def auth_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A signing key pair for the session, trusted by every API the tests start.

    `AUTH_JWKS_URL` is set in this process's environment, so apps made in the test
    process and the processes it starts (they inherit it) verify tokens against it;
    `tests.support.bearer(...)` mints the tokens.
    """
    auth_dir = tmp_path_factory.mktemp("auth")
    ensure_keys(auth_dir)
    previous = os.environ.get("AUTH_JWKS_URL")
    os.environ["AUTH_JWKS_URL"] = jwks_url(auth_dir)
    support.AUTH_DIR = auth_dir
    try:
        yield auth_dir
    finally:
        support.AUTH_DIR = None
        if previous is None:
            os.environ.pop("AUTH_JWKS_URL", None)
        else:
            os.environ["AUTH_JWKS_URL"] = previous


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A noida-db broker on a free port for the whole session."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """`127.0.0.1:PORT` of the session's broker."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A SecantusDB server (one-node replica set) on a free port for the whole session."""
    ensure_secantus_venv()
    server = MongoServer(tmp_path_factory.mktemp("mongo")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_url(mongo_server: MongoServer) -> str:
    """`mongodb://127.0.0.1:PORT/?directConnection=true` of the session's server."""
    return mongo_server.url


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[str]:
    """A broker of its own for each test (it starts in a fraction of a second)."""
    broker = KafkaBroker(tmp_path / "kafka").start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
async def mongo_database(mongo_url: str) -> AsyncIterator[str]:
    """A fresh database name on the session's MongoDB-wire server, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    await client.drop_database(name)
    await client.close()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The event store: a SQLite file, or a fresh schema on the local PostgreSQL."""
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path}/{{service}}.db")
        return
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        yield Store(POSTGRES_URL, schema)
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
