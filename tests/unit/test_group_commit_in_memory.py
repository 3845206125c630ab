"""Group commit on eventsourcing's in-memory recorder (no server): batch-internal cases."""

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from kernel.errors import DomainError
from tests.batching import HeldWriter, outcome
from tests.kernel_example.application import Saved, TalliesApplication
from tests.kernel_example.domain import Tally


@pytest.fixture
def tallies() -> Iterator[TalliesApplication]:
    app = TalliesApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield app
    app.close()


def test_a_second_creation_in_the_same_batch_sees_the_first(tallies):
    def start_unless_started(unit: str) -> Saved:
        if Tally.create_id("t-1") in tallies.repository:  # a read: it takes a turn
            raise DomainError("tally t-1 is already started")
        return tallies.start_tally("t-1", unit)

    with ThreadPoolExecutor(3) as pool:
        writer = HeldWriter(tallies, pool)
        first = writer.queue(lambda: tallies.group_commit.run(lambda: start_unless_started("A")))
        second = writer.queue(lambda: tallies.group_commit.run(lambda: start_unless_started("B")))
        writer.let_go()
        started, refused = outcome(first), outcome(second)

    assert (started.tally_id, started.version) == (Tally.create_id("t-1"), 1)
    assert isinstance(refused, DomainError)
    assert str(refused) == "tally t-1 is already started"
    assert tallies.get_tally("t-1").unit == "A"


def test_two_blind_creations_of_one_aggregate_in_a_batch_store_the_first_only(tallies):
    def create_without_looking(unit: str) -> int:
        with suppress(AggregateNotFoundError):
            tallies.repository.get(uuid.uuid4())  # a read, so that it takes a turn
        tally = Tally("t-1", unit)  # but not of t-1
        return tallies.save(tally)[0].notification.id

    with ThreadPoolExecutor(3) as pool:
        writer = HeldWriter(tallies, pool)
        first = writer.queue(lambda: tallies.group_commit.run(lambda: create_without_looking("A")))
        second = writer.queue(lambda: tallies.group_commit.run(lambda: create_without_looking("B")))
        writer.let_go()
        position, conflict = outcome(first), outcome(second)

    assert position == 1
    assert isinstance(conflict, IntegrityError)  # as alone: the id was taken just before
    assert tallies.get_tally("t-1").unit == "A"
    assert tallies.recorder.max_notification_id() == 1


def test_a_command_that_reads_nothing_takes_no_turn(tallies):
    with ThreadPoolExecutor(3) as pool:
        writer = HeldWriter(tallies, pool)
        started = writer.submit(lambda: tallies.start_tally("t-1"))
        assert tallies.group_commit.waiting() == 0  # it did not queue behind the hold
        writer.let_go()  # its batch (the hold's) commits
        saved = started.result(timeout=30)

    assert saved.position == 1


def test_a_save_outside_any_command_is_an_ordinary_save(tallies):
    recordings = tallies.save(Tally("t-1"))

    assert [r.notification.id for r in recordings] == [1]
    assert tallies.group_commit.waiting() == 0
