"""The event store on PostgreSQL keeps every table of a service in its schema."""

import pytest
import sqlalchemy

from tests.kernel_example.application import TalliesApplication
from tests.stores import POSTGRES_URL
from write_side.kernel.application import open_application

pytestmark = pytest.mark.postgres


def test_events_and_tracking_live_in_the_configured_schema(store):
    if store.schema is None:
        pytest.skip("only PostgreSQL has schemas")
    app = open_application(TalliesApplication, store.url("tallies"), store.schema)
    try:
        app.start_tally("t-1")
    finally:
        app.close()
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.connect() as connection:
        tables = connection.execute(
            sqlalchemy.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_name IN ('tallies_events', 'tallies_tracking') "
                "AND table_schema IN (:schema, current_schema())"  # not other tests' schemas
            ),
            {"schema": store.schema},
        ).all()
    engine.dispose()
    assert sorted(tables) == [(store.schema, "tallies_events"), (store.schema, "tallies_tracking")]
