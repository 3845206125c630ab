"""Fixtures for integration tests: real broker, real MongoDB-wire server, real stores."""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from write_side.orders.settings import OrdersSettings

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


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
