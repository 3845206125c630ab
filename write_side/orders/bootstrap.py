"""Composition of the orders service's pieces, shared by its processes."""

from kernel.application import open_application
from write_side.orders.application import OrdersApplication
from write_side.orders.settings import OrdersSettings


def build_application(settings: OrdersSettings | None = None) -> OrdersApplication:
    settings = settings or OrdersSettings()
    return open_application(
        OrdersApplication, settings.orders_database_url, settings.orders_database_schema
    )
