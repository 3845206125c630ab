"""Group commit on eventsourcing's in-memory recorder (no server): batch-internal cases."""

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from tests.batching import HeldWriter, outcome
from write_side.kernel.errors import DomainError
from write_side.kitchen.application import KitchenApplication
from write_side.kitchen.domain import Restaurant


@pytest.fixture
def kitchen() -> Iterator[KitchenApplication]:
    app = KitchenApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield app
    app.close()


def test_a_second_registration_in_the_same_batch_sees_the_first(kitchen):
    with ThreadPoolExecutor(3) as pool:
        writer = HeldWriter(kitchen, pool)
        first = writer.queue(lambda: kitchen.register_restaurant("rest-1", "First", ["pizza"]))
        second = writer.queue(lambda: kitchen.register_restaurant("rest-1", "Second", ["soup"]))
        writer.let_go()
        registered, refused = outcome(first), outcome(second)

    assert (registered.restaurant_id, registered.version) == ("rest-1", 1)
    assert isinstance(refused, DomainError)
    assert str(refused) == "restaurant rest-1 is already registered"
    assert kitchen.get_restaurant("rest-1").name == "First"


def test_two_blind_creations_of_one_aggregate_in_a_batch_store_the_first_only(kitchen):
    def create_without_looking(name: str) -> int:
        with suppress(AggregateNotFoundError):
            kitchen.repository.get(uuid.uuid4())  # a read, so that it takes a turn
        restaurant = Restaurant("rest-1", name, ["pizza"])  # but not of rest-1
        return kitchen.save(restaurant)[0].notification.id

    with ThreadPoolExecutor(3) as pool:
        writer = HeldWriter(kitchen, pool)
        first = writer.queue(lambda: kitchen.group_commit.run(lambda: create_without_looking("A")))
        second = writer.queue(lambda: kitchen.group_commit.run(lambda: create_without_looking("B")))
        writer.let_go()
        position, conflict = outcome(first), outcome(second)

    assert position == 1
    assert isinstance(conflict, IntegrityError)  # as alone: the id was taken just before
    assert kitchen.get_restaurant("rest-1").name == "A"
    assert kitchen.recorder.max_notification_id() == 1


def test_a_command_that_reads_nothing_takes_no_turn(kitchen):
    with ThreadPoolExecutor(3) as pool:
        writer = HeldWriter(kitchen, pool)
        created = writer.submit(
            lambda: kitchen.group_commit.run(
                lambda: kitchen.save(Restaurant("rest-1", "Pizzeria", ["pizza"]))
            )
        )
        assert kitchen.group_commit.waiting() == 0  # it did not queue behind the hold
        writer.let_go()  # its batch (the hold's) commits
        [recording] = created.result(timeout=30)

    assert recording.notification.id == 1


def test_a_save_outside_any_command_is_an_ordinary_save(kitchen):
    recordings = kitchen.save(Restaurant("rest-1", "Pizzeria", ["pizza"]))

    assert [r.notification.id for r in recordings] == [1]
    assert kitchen.group_commit.waiting() == 0
