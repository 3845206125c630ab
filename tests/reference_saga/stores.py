"""The orders service's settings on a test's event stores."""

from typing import Any

from tests.stores import Store
from write_side.orders.settings import OrdersSettings


def orders_settings(store: Store, **overrides: Any) -> OrdersSettings:
    return OrdersSettings(
        orders_database_url=store.url("orders"), orders_database_schema=store.schema, **overrides
    )
