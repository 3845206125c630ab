"""The event store on PostgreSQL keeps every table of a service in its schema."""

import pytest
import sqlalchemy

from tests.stores import POSTGRES_URL
from write_side.kernel.application import open_application
from write_side.orders.application import OrdersApplication

pytestmark = pytest.mark.postgres


def test_events_and_tracking_live_in_the_configured_schema(store):
    if store.schema is None:
        pytest.skip("only PostgreSQL has schemas")
    app = open_application(OrdersApplication, store.url("orders"), store.schema)
    try:
        app.place_order(
            "c-1",
            "r-1",
            {"street": "1 Main St"},
            [{"menu_item_id": "pizza", "quantity": 1, "unit_price_cents": 100}],
        )
    finally:
        app.close()
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.connect() as connection:
        tables = connection.execute(
            sqlalchemy.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_name IN ('orders_events', 'orders_tracking')"
            )
        ).all()
    engine.dispose()
    assert sorted(tables) == [(store.schema, "orders_events"), (store.schema, "orders_tracking")]
