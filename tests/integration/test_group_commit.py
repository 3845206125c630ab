"""Group commit on SQLite and PostgreSQL: batched commands answer as they would alone.

To know the arrival order, a test holds the writer with a command that waits inside
its turn, queues the commands one by one behind it, then lets it go: they all run
in that order, in one batch.
"""

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from devstack.servers import free_port
from tests import processes
from tests.batching import HeldWriter, outcome
from tests.examples import PLACE_ORDER
from tests.support import wait_for
from write_side.kernel.application import ServiceApplication, open_application
from write_side.kernel.errors import DomainError, NotFound
from write_side.kernel.group_commit import _current, _State
from write_side.kitchen.application import KitchenApplication
from write_side.orders.application import OrdersApplication, Saved
from write_side.orders.domain import Order

ORDER = dict(PLACE_ORDER)


def opened(app_class: type, store, service: str) -> Any:
    return open_application(app_class, store.url(service), store.schema)


@pytest.fixture
def orders(store) -> Iterator[OrdersApplication]:
    app = opened(OrdersApplication, store, "orders")
    yield app
    app.close()


@pytest.fixture
def kitchen(store) -> Iterator[KitchenApplication]:
    app = opened(KitchenApplication, store, "kitchen")
    yield app
    app.close()


def stored_events(app: ServiceApplication, after: int = 0) -> list[tuple[uuid.UUID, int, str]]:
    """(aggregate id, version, event class) of the stored events after a position."""
    notifications = app.recorder.select_notifications(after + 1, 100_000)
    return [
        (n.originator_id, n.originator_version, n.topic.rsplit(".", 1)[-1]) for n in notifications
    ]


def approved_order(app: OrdersApplication) -> uuid.UUID:
    order_id = app.place_order(**ORDER).order_id
    app.approve_order(order_id)
    return order_id


# Many commands on one aggregate


def test_commands_on_one_aggregate_are_applied_in_arrival_order_in_one_batch(kitchen):
    kitchen.register_restaurant("rest-1", "Pizzeria", ["start"])
    menus = [[f"dish-{i}"] for i in range(20)]

    with ThreadPoolExecutor(len(menus) + 1) as pool:
        writer = HeldWriter(kitchen, pool)
        futures = [
            writer.queue(lambda menu=menu: kitchen.set_menu("rest-1", menu)) for menu in menus
        ]
        writer.let_go()
        answers = [future.result(timeout=60) for future in futures]

    assert [answer.version for answer in answers] == list(range(2, 22))
    positions = [answer.position for answer in answers]
    assert positions == list(range(positions[0], positions[0] + 20))  # one batch, in order
    restaurant_id = kitchen.get_restaurant("rest-1").id
    menus_by_version = [kitchen.repository.get(restaurant_id, version=v).menu for v in (2, 11, 21)]
    assert menus_by_version == [["dish-0"], ["dish-9"], ["dish-19"]]


def test_many_concurrent_commands_on_one_aggregate_all_apply_with_versions_1_to_n(kitchen):
    kitchen.register_restaurant("rest-1", "Pizzeria", ["start"])
    start = threading.Barrier(40, timeout=30)

    def set_menu(i: int) -> Any:
        start.wait()
        return kitchen.set_menu("rest-1", [f"dish-{i}"])

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(set_menu, range(40)))  # any 409 would raise here

    by_version = sorted(answers, key=lambda answer: answer.version)
    assert [answer.version for answer in by_version] == list(range(2, 42))
    positions = [answer.position for answer in by_version]
    assert positions == sorted(positions) and len(set(positions)) == 40
    restaurant_id = kitchen.get_restaurant("rest-1").id
    assert [
        v for (aggregate_id, v, _) in stored_events(kitchen) if aggregate_id == restaurant_id
    ] == list(range(1, 42))


# A batch mixing every outcome


def test_a_mixed_batch_answers_each_command_as_alone_and_stores_only_the_successes(orders, store):
    cancelled_here = approved_order(orders)
    changed_elsewhere = approved_order(orders)
    unknown = uuid.uuid4()
    other_process = opened(OrdersApplication, store, "orders")
    before = orders.recorder.max_notification_id()

    def cancel_while_another_process_cancels_it() -> None:
        order: Order = orders.get_order(changed_elsewhere)
        other_process.cancel_order(changed_elsewhere, "cancelled by another process")
        order.cancel("cancelled here")
        orders.save(order)

    try:
        with ThreadPoolExecutor(8) as pool:
            writer = HeldWriter(orders, pool)
            answers = [
                writer.queue(lambda: orders.cancel_order(cancelled_here, "first")),
                writer.queue(lambda: orders.cancel_order(cancelled_here, "second")),
                writer.queue(lambda: orders.cancel_order(unknown, "never placed")),
                writer.submit(lambda: orders.place_order(**ORDER)),
                writer.queue(
                    lambda: orders.group_commit.run(cancel_while_another_process_cancels_it)
                ),
                writer.queue(lambda: orders.cancel_order(changed_elsewhere, "after the conflict")),
                writer.submit(lambda: orders.place_order(**ORDER)),
            ]
            writer.let_go()
            first, second, not_found, placed, conflicted, after_conflict, placed_last = map(
                outcome, answers
            )
    finally:
        other_process.close()

    assert (first.order_id, first.version) == (cancelled_here, 3)
    assert (
        isinstance(second, DomainError)
        and str(second) == "cannot cancel an order that is CANCELLED"
    )
    assert isinstance(not_found, NotFound)
    assert placed.version == placed_last.version == 1
    assert isinstance(conflicted, IntegrityError)
    # It read the order the conflicting command left; run again, it meets the other
    # process's cancellation, as it would have alone.
    assert isinstance(after_conflict, DomainError)
    assert str(after_conflict) == "cannot cancel an order that is CANCELLED"

    assert sorted(stored_events(orders, after=before), key=lambda e: (str(e[0]), e[1])) == sorted(
        [
            (changed_elsewhere, 3, "Cancelled"),
            (cancelled_here, 3, "Cancelled"),
            (placed.order_id, 1, "Placed"),
            (placed_last.order_id, 1, "Placed"),
        ],
        key=lambda e: (str(e[0]), e[1]),
    )
    assert len({first.position, placed.position, placed_last.position}) == 3
    assert orders.get_order(changed_elsewhere).cancellation_reason == "cancelled by another process"
    assert orders.get_order(cancelled_here).cancellation_reason == "first"


def test_a_command_that_fails_after_changing_an_aggregate_leaves_no_trace_in_the_batch(kitchen):
    kitchen.register_restaurant("rest-1", "Pizzeria", ["pizza"])

    def change_then_fail() -> None:
        restaurant = kitchen.get_restaurant("rest-1")
        restaurant.set_menu(["half-done"])  # a new state and a pending event ...
        raise DomainError("refused after the change")  # ... then it fails

    with ThreadPoolExecutor(4) as pool:
        writer = HeldWriter(kitchen, pool)
        failing = writer.queue(lambda: kitchen.group_commit.run(change_then_fail))
        closing = writer.queue(lambda: kitchen.close_restaurant("rest-1"))
        writer.let_go()
        failed, closed = outcome(failing), outcome(closing)

    assert isinstance(failed, DomainError)
    assert closed.version == 2  # it saw version 1, without the failed change
    restaurant = kitchen.get_restaurant("rest-1")
    assert (restaurant.menu, restaurant.is_open, restaurant.version) == (["pizza"], False, 2)
    assert [kind for (_, _, kind) in stored_events(kitchen)] == ["Registered", "Closed"]


def test_a_failure_inside_the_transaction_stores_nothing_and_fails_every_command(
    orders, monkeypatch
):
    cancelled = approved_order(orders)
    before = stored_events(orders)
    recorder = orders.recorder
    insert = recorder._insert_stored_events

    def insert_then_fail(session, stored, **kwargs):
        insert(session, stored, **kwargs)  # the rows are in the transaction ...
        raise OperationalError("the database went away mid-batch")  # ... then it fails

    monkeypatch.setattr(recorder, "_insert_stored_events", insert_then_fail)
    with ThreadPoolExecutor(8) as pool:
        writer = HeldWriter(orders, pool)
        answers = [writer.submit(lambda: orders.place_order(**ORDER)) for _ in range(5)]
        answers.append(writer.queue(lambda: orders.cancel_order(cancelled, "too late")))
        unknown = writer.queue(lambda: orders.cancel_order(uuid.uuid4(), "never placed"))
        writer.let_go()
        outcomes = [outcome(answer) for answer in answers]
        not_found = outcome(unknown)
    monkeypatch.undo()

    assert all(isinstance(answer, OperationalError) for answer in outcomes), outcomes
    assert isinstance(not_found, NotFound)  # it saved nothing: its own answer stands
    assert stored_events(orders) == before
    assert orders.get_order(cancelled).state.value == "APPROVED"
    # The service goes on: the next command is stored.
    assert orders.cancel_order(cancelled, "now").version == 3


def test_a_command_that_holds_its_turn_too_long_does_not_hold_up_the_others(orders):
    slow_one, *others = [approved_order(orders) for _ in range(4)]
    orders.group_commit.max_turn = 0.05
    release = threading.Event()

    def slow_cancel() -> Saved:
        orders.get_order(slow_one)  # its turn begins ...
        release.wait(timeout=30)  # ... and lasts
        return orders.cancel_order(slow_one, "slowly")

    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(orders.group_commit.run, slow_cancel)
        cancelled = [orders.cancel_order(order_id, "at once") for order_id in others]
        release.set()
        late = slow.result(timeout=30)

    assert [saved.version for saved in [*cancelled, late]] == [3, 3, 3, 3]
    assert late.position > cancelled[-1].position


def test_what_a_command_detached_while_loading_read_is_not_kept_for_later_ones(orders, store):
    """Seen in the saga: a slow first load (a cold process) outlived its turn, and the
    order it loaded stayed in the identity map, so a later command in the same process
    saw it pending after another process had approved it."""
    order_id = orders.place_order(**ORDER).order_id
    orders.group_commit.max_turn = 0.05

    def load_once_detached() -> Order:
        turn = _current.get()
        assert turn is not None
        wait_for(lambda: turn.state is _State.DETACHED, timeout=10)
        order: Order = orders.get_order(order_id)  # outside any turn now: the store
        return order

    orders.group_commit.run(lambda: orders.group_commit.read(order_id, load_once_detached))
    other_process = opened(OrdersApplication, store, "orders")
    try:
        other_process.approve_order(order_id)
    finally:
        other_process.close()

    assert orders.cancel_order(order_id, "changed my mind").version == 3


# Batches while the committer is busy


class HeldCommit:
    """Holds the committer inside its first batch's transaction until ``let_go``."""

    def __init__(self, app: ServiceApplication, monkeypatch: pytest.MonkeyPatch):
        self.app = app
        self.inside = threading.Event()
        self.release = threading.Event()
        self.batch_sizes: list[int] = []
        insert = app.recorder._insert_stored_events

        def counted_insert(session, stored, **kwargs):
            self.batch_sizes.append(len(stored))
            if len(self.batch_sizes) == 1:
                self.inside.set()
                self.release.wait(timeout=60)
            return insert(session, stored, **kwargs)

        monkeypatch.setattr(app.recorder, "_insert_stored_events", counted_insert)

    def joined(self) -> int:
        """How many commands wait in batches not yet handed to the recorder."""
        group = self.app.group_commit
        with group._mutex:
            return len(group._open_batch.turns) + sum(len(b.turns) for b in group._ready)

    def let_go(self) -> None:
        self.release.set()


def test_while_the_committer_is_busy_the_next_batches_fill_up_to_the_limit(orders, monkeypatch):
    orders.group_commit.max_batch_size = 5
    held = HeldCommit(orders, monkeypatch)
    with ThreadPoolExecutor(24) as pool:
        first = pool.submit(orders.place_order, **ORDER)
        assert held.inside.wait(timeout=30)
        rest = [pool.submit(orders.place_order, **ORDER) for _ in range(23)]
        wait_for(lambda: held.joined() == 23, message="commands joined while busy")
        held.let_go()
        answers = [answer.result(timeout=60) for answer in [first, *rest]]

    assert held.batch_sizes[0] == 1
    assert sorted(held.batch_sizes[1:]) == [3, 5, 5, 5, 5]  # full batches, then the rest
    positions = [saved.position for saved in answers]
    assert len(set(positions)) == 24
    assert sorted(positions) == [n.id for n in orders.recorder.select_notifications(1, 100)]


def test_closing_the_application_commits_and_answers_the_commands_in_flight(orders, monkeypatch):
    held = HeldCommit(orders, monkeypatch)
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(orders.place_order, **ORDER)
        assert held.inside.wait(timeout=30)
        rest = [pool.submit(orders.place_order, **ORDER) for _ in range(10)]
        wait_for(lambda: held.joined() == 10, message="commands joined while busy")
        closing = pool.submit(orders.group_commit.close)
        held.let_go()
        closing.result(timeout=30)
        answers = [answer.result(timeout=30) for answer in [first, *rest]]

    stored = {n.id: n.originator_id for n in orders.recorder.select_notifications(1, 100)}
    assert {saved.position: saved.order_id for saved in answers} == stored
    with pytest.raises(RuntimeError, match="closed"):
        orders.place_order(**ORDER)


# A crash with batches in flight


def test_killing_the_api_mid_batch_keeps_every_answered_command_and_no_partial_one(
    store, tmp_path: Path
):
    port = free_port()
    api = processes.api(
        "orders-api", "write_side.orders.api:create_app", port, store.env("orders"), tmp_path
    )
    url = f"http://127.0.0.1:{port}"
    answered: list[dict] = []
    stop = threading.Event()

    def place_orders() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post("/orders", json=ORDER)
                except httpx.HTTPError:
                    return  # the server is gone
                assert response.status_code == 201, response.text
                answered.append(response.json())

    try:
        wait_for(
            lambda: httpx.get(f"{url}/health").status_code == 200,
            timeout=60,
            ignore=(httpx.HTTPError,),
            message="the orders API never became healthy",
        )
        with ThreadPoolExecutor(16) as pool:
            clients = [pool.submit(place_orders) for _ in range(16)]
            wait_for(lambda: len(answered) >= 300, timeout=60, message="orders answered")
            api.kill()  # SIGKILL, batches in flight
            stop.set()
            for client in clients:
                client.result(timeout=30)
    finally:
        stop.set()
        api.stop()

    app = opened(OrdersApplication, store, "orders")
    try:
        events = stored_events(app)
        positions = {
            notification.id: notification.originator_id
            for notification in app.recorder.select_notifications(1, 100_000)
        }
        for accepted in answered:  # every 201 is stored, where it said
            assert positions[accepted["position"]] == uuid.UUID(accepted["order_id"])
        # Every stored order is whole (its one event) and readable; the log has no gaps.
        assert {(version, kind) for (_, version, kind) in events} == {(1, "Placed")}
        assert sorted(positions) == list(range(1, len(positions) + 1))
        assert len(events) >= len(answered)
        for aggregate_id in list(positions.values())[-50:]:
            assert app.get_order(aggregate_id).version == 1
    finally:
        app.close()
