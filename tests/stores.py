"""The event stores tests run on."""

from typing import Any

from write_side.orders.settings import OrdersSettings

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def orders_settings(env: dict[str, str], **overrides: Any) -> OrdersSettings:
    values = {key.lower(): value for key, value in env.items()}
    return OrdersSettings(**{**values, **overrides})
