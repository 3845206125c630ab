"""The event store on PostgreSQL keeps every table of a service in its schema."""

import threading
from concurrent.futures import ThreadPoolExecutor

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


def test_processes_of_one_service_starting_together_on_a_fresh_store_all_open_it(store):
    """Its API, relay and saga worker start at once (``cqrs run``, compose): on a fresh
    store (a new SQLite file, a new PostgreSQL schema) each one creates the tables, and
    the check before the create is not atomic. Whoever loses the race finds the tables
    made."""
    starting = threading.Barrier(8)

    def open_together() -> TalliesApplication:
        starting.wait()
        return open_application(TalliesApplication, store.url("tallies"), store.schema)

    with ThreadPoolExecutor(8) as pool:
        opened = [
            future.result(timeout=60) for future in [pool.submit(open_together) for _ in range(8)]
        ]
    try:
        opened[0].start_tally("t-1")
        assert opened[-1].get_tally("t-1").name == "t-1"
    finally:
        for app in opened:
            app.close()
