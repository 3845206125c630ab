"""The event store: on PostgreSQL every table of a service in its schema; the relay's
reads and position records through the recorder's own statements."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy
from eventsourcing.persistence import IntegrityError
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder

from kernel.application import open_application
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.domain import Tally
from tests.stores import POSTGRES_URL

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


class SnapshottingTallies(TalliesApplication):
    """With snapshots, so with the aggregate recorder's table too (``tallies_snapshots``)."""

    snapshotting_intervals = {Tally: 10}  # noqa: RUF012 - eventsourcing's class setting


def test_processes_of_one_service_starting_together_on_a_fresh_store_all_open_it(store):
    """Its API, relays and saga worker start at once (``cqrs run``, compose): on a fresh
    store (a new SQLite file, a new PostgreSQL schema) each one creates the tables, the
    snapshots' included, and the check before the create is not atomic. Whoever loses the
    race finds the tables made. On SQLite they also race to put the new file in WAL mode
    (one of them is refused at once, 1 time in 15 here): a fresh file each time, 20 times."""
    files = 20 if store.schema is None else 1  # a schema is fresh only once
    for number in range(files):
        starting = threading.Barrier(8)
        url = store.url(f"tallies{number}")

        def open_together(
            url: str = url, starting: threading.Barrier = starting
        ) -> TalliesApplication:
            starting.wait()
            return open_application(SnapshottingTallies, url, store.schema)

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(open_together) for _ in range(8)]
            opened = [future.result(timeout=60) for future in futures]
        try:
            opened[0].start_tally("t-1")
            assert opened[-1].get_tally("t-1").name == "t-1"
        finally:
            for app in opened:
                app.close()


def test_notifications_are_read_as_the_library_reads_them(store):
    """The recorder's own SELECT (Core, not the ORM) gives what the library's gives."""
    app = open_application(TalliesApplication, store.url("tallies"), store.schema)
    try:
        for i in range(12):
            app.start_tally(f"t-{i}")
            app.add_to_tally(f"t-{i}", i + 1)
        recorder = app.recorder
        added = "tests.kernel_example.domain:Tally.Added"
        for args, kwargs in [
            ((1, 100), {}),
            ((5, 7), {}),
            ((5, 7), {"inclusive_of_start": False}),
            ((3, 100), {"stop": 10}),
            ((1, 100), {"topics": [added]}),
            ((None, 4), {}),
            ((25, 10), {}),
        ]:
            ours = recorder.select_notifications(*args, **kwargs)
            library = SQLAlchemyApplicationRecorder.select_notifications(recorder, *args, **kwargs)
            assert ours == library, (args, kwargs)
        assert [n.topic for n in recorder.select_notifications(1, 100, topics=[added])] == [
            added
        ] * 12
    finally:
        app.close()


def test_a_position_is_recorded_only_forward(store):
    app = open_application(TalliesApplication, store.url("tallies"), store.schema)
    try:
        recorder = app.recorder
        assert recorder.max_tracking_id("relay:tallies") is None
        recorder.record_position("relay:tallies", 5)
        recorder.record_position("relay:tallies", 9)
        recorder.record_position("relay:other", 2)
        for behind in (9, 3):
            with pytest.raises(IntegrityError):
                recorder.record_position("relay:tallies", behind)
        assert recorder.max_tracking_id("relay:tallies") == 9
        assert recorder.max_tracking_id("relay:other") == 2
        assert recorder.has_tracking_id("relay:tallies", 9)
        assert not recorder.has_tracking_id("relay:tallies", 10)
    finally:
        app.close()
