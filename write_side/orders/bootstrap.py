"""Composition of the orders service's pieces, shared by its API and relay processes."""

from pathlib import Path

from sqlalchemy.engine import make_url

from write_side.kernel.store import event_store_env
from write_side.orders.application import OrdersApplication
from write_side.orders.settings import OrdersSettings


def build_application(settings: OrdersSettings) -> OrdersApplication:
    url = make_url(settings.orders_database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    env = event_store_env(settings.orders_database_url, settings.orders_database_schema)
    return OrdersApplication(env=env)
