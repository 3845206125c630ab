"""Fixtures for integration tests: real broker, real MongoDB-wire server, real stores."""

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from pymongo import AsyncMongoClient

from devstack.servers import KafkaBroker
from write_side.orders.settings import OrdersSettings

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


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
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The orders event store: a SQLite file, or a fresh schema on the local PostgreSQL."""
    if request.param == "sqlite":
        yield {"ORDERS_DATABASE_URL": f"sqlite:///{tmp_path}/orders.db"}
        return
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        yield {"ORDERS_DATABASE_URL": POSTGRES_URL, "ORDERS_DATABASE_SCHEMA": schema}
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def orders_settings(env: dict[str, str], **overrides: Any) -> OrdersSettings:
    values = {key.lower(): value for key, value in env.items()}
    return OrdersSettings(**{**values, **overrides})
