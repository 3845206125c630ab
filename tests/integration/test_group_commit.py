"""Group commit on SQLite and PostgreSQL: batched commands answer as they would alone.

To know the arrival order, a test holds the writer with a command that waits inside
its turn, queues the commands one by one behind it, then lets it go: they all run
in that order, in one batch.
"""

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, Tracking
from fastapi.testclient import TestClient

from devstack.servers import free_port
from kernel.application import ServiceApplication, open_application
from kernel.errors import DomainError, NotFound
from kernel.group_commit import _current, _State
from tests import processes
from tests.batching import HeldWriter, commits_of, outcome
from tests.kernel_example.api import TalliesSettings
from tests.kernel_example.api import create_app as create_tallies_api
from tests.kernel_example.application import Saved, TalliesApplication
from tests.kernel_example.domain import Tally
from tests.support import bearer, wait_for

PROJECT = Path(__file__).resolve().parents[2]
"""Where the tallies API's module is (the API runs in a process of its own)."""


def opened(store) -> TalliesApplication:
    return open_application(TalliesApplication, store.url("tallies"), store.schema)


@pytest.fixture
def tallies(store) -> Iterator[TalliesApplication]:
    app = opened(store)
    yield app
    app.close()


def new_name() -> str:
    """A tally's id derives from its name: a fresh name is a new tally."""
    return f"tally-{uuid.uuid4().hex[:12]}"


def stored_events(app: ServiceApplication, after: int = 0) -> list[tuple[uuid.UUID, int, str]]:
    """(aggregate id, version, event class) of the stored events after a position."""
    notifications = app.recorder.select_notifications(after + 1, 100_000)
    return [
        (n.originator_id, n.originator_version, n.topic.rsplit(".", 1)[-1]) for n in notifications
    ]


# Many commands on one aggregate


def test_commands_on_one_aggregate_are_applied_in_arrival_order_in_one_batch(tallies):
    tallies.start_tally("t-1")
    amounts = [i + 1 for i in range(20)]

    with ThreadPoolExecutor(len(amounts) + 1) as pool:
        writer = HeldWriter(tallies, pool)
        futures = [
            writer.queue(lambda amount=amount: tallies.add_to_tally("t-1", amount))
            for amount in amounts
        ]
        writer.let_go()
        answers = [future.result(timeout=60) for future in futures]

    assert [answer.version for answer in answers] == list(range(2, 22))
    positions = [answer.position for answer in answers]
    assert positions == list(range(positions[0], positions[0] + 20))  # one batch, in order
    tally_id = Tally.create_id("t-1")
    totals_by_version = [tallies.repository.get(tally_id, version=v).total for v in range(2, 22)]
    assert totals_by_version == list(itertools.accumulate(amounts))


def test_many_concurrent_commands_on_one_aggregate_all_apply_with_versions_1_to_n(tallies):
    tallies.start_tally("t-1")
    start = threading.Barrier(40, timeout=30)

    def add(i: int) -> Any:
        start.wait()
        return tallies.add_to_tally("t-1", i + 1)

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(add, range(40)))  # any 409 would raise here

    by_version = sorted(answers, key=lambda answer: answer.version)
    assert [answer.version for answer in by_version] == list(range(2, 42))
    positions = [answer.position for answer in by_version]
    assert positions == sorted(positions) and len(set(positions)) == 40
    tally_id = Tally.create_id("t-1")
    assert [v for (aggregate_id, v, _) in stored_events(tallies) if aggregate_id == tally_id] == (
        list(range(1, 42))
    )
    assert tallies.get_tally("t-1").total == sum(range(1, 41))


# A batch mixing every outcome


def test_a_mixed_batch_answers_each_command_as_alone_and_stores_only_the_successes(tallies, store):
    tallies.start_tally("closed-here")
    tallies.start_tally("changed-elsewhere")
    other_process = opened(store)
    before = tallies.recorder.max_notification_id()

    def close_while_another_process_closes_it() -> None:
        tally = tallies.get_tally("changed-elsewhere")
        other_process.close_tally("changed-elsewhere", "closed by another process")
        tally.close("closed here")
        tallies.save(tally)

    try:
        with ThreadPoolExecutor(8) as pool:
            writer = HeldWriter(tallies, pool)
            answers = [
                writer.queue(lambda: tallies.close_tally("closed-here", "first")),
                writer.queue(lambda: tallies.close_tally("closed-here", "second")),
                writer.queue(lambda: tallies.close_tally("never-started", "unknown")),
                writer.submit(lambda: tallies.start_tally("started")),
                writer.queue(
                    lambda: tallies.group_commit.run(close_while_another_process_closes_it)
                ),
                writer.queue(lambda: tallies.close_tally("changed-elsewhere", "after it")),
                writer.submit(lambda: tallies.start_tally("started-last")),
            ]
            writer.let_go()
            first, second, not_found, started, conflicted, after_conflict, started_last = map(
                outcome, answers
            )
    finally:
        other_process.close()

    assert (first.tally_id, first.version) == (Tally.create_id("closed-here"), 2)
    assert isinstance(second, DomainError)
    assert str(second) == "tally closed-here is already closed"
    assert isinstance(not_found, NotFound)
    assert started.version == started_last.version == 1
    assert isinstance(conflicted, IntegrityError)
    # It read the tally the conflicting command left; run again, it meets the other
    # process's closing, as it would have alone.
    assert isinstance(after_conflict, DomainError)
    assert str(after_conflict) == "tally changed-elsewhere is already closed"

    def key(event: tuple[uuid.UUID, int, str]) -> tuple[str, int]:
        return str(event[0]), event[1]

    assert sorted(stored_events(tallies, after=before), key=key) == sorted(
        [
            (Tally.create_id("changed-elsewhere"), 2, "Closed"),
            (Tally.create_id("closed-here"), 2, "Closed"),
            (started.tally_id, 1, "Started"),
            (started_last.tally_id, 1, "Started"),
        ],
        key=key,
    )
    assert len({first.position, started.position, started_last.position}) == 3
    assert tallies.get_tally("changed-elsewhere").closed_because == "closed by another process"
    assert tallies.get_tally("closed-here").closed_because == "first"


def test_a_command_that_fails_after_changing_an_aggregate_leaves_no_trace_in_the_batch(tallies):
    tallies.start_tally("t-1")

    def change_then_fail() -> None:
        tally = tallies.get_tally("t-1")
        tally.add(5)  # a new state and a pending event ...
        raise DomainError("refused after the change")  # ... then it fails

    with ThreadPoolExecutor(4) as pool:
        writer = HeldWriter(tallies, pool)
        failing = writer.queue(lambda: tallies.group_commit.run(change_then_fail))
        closing = writer.queue(lambda: tallies.close_tally("t-1", "done"))
        writer.let_go()
        failed, closed = outcome(failing), outcome(closing)

    assert isinstance(failed, DomainError)
    assert closed.version == 2  # it saw version 1, without the failed change
    tally = tallies.get_tally("t-1")
    assert (tally.total, tally.closed_because, tally.version) == (0, "done", 2)
    assert [kind for (_, _, kind) in stored_events(tallies)] == ["Started", "Closed"]


def test_a_failure_inside_the_transaction_stores_nothing_and_fails_every_command(
    tallies, monkeypatch
):
    tallies.start_tally("t-1")
    before = stored_events(tallies)
    recorder = tallies.recorder
    insert = recorder._insert_stored_events

    def insert_then_fail(session, stored, **kwargs):
        insert(session, stored, **kwargs)  # the rows are in the transaction ...
        raise OperationalError("the database went away mid-batch")  # ... then it fails

    monkeypatch.setattr(recorder, "_insert_stored_events", insert_then_fail)
    with ThreadPoolExecutor(8) as pool:
        writer = HeldWriter(tallies, pool)
        answers = [writer.submit(lambda: tallies.start_tally(new_name())) for _ in range(5)]
        answers.append(writer.queue(lambda: tallies.close_tally("t-1", "too late")))
        unknown = writer.queue(lambda: tallies.close_tally("never-started", "unknown"))
        writer.let_go()
        outcomes = [outcome(answer) for answer in answers]
        not_found = outcome(unknown)
    monkeypatch.undo()

    assert all(isinstance(answer, OperationalError) for answer in outcomes), outcomes
    assert isinstance(not_found, NotFound)  # it saved nothing: its own answer stands
    assert stored_events(tallies) == before
    assert tallies.get_tally("t-1").closed_because is None
    # The service goes on: the next command is stored.
    assert tallies.close_tally("t-1", "now").version == 2


def test_a_command_that_holds_its_turn_too_long_does_not_hold_up_the_others(tallies):
    slow_one, *others = names = [new_name() for _ in range(4)]
    for name in names:
        tallies.start_tally(name)
    tallies.group_commit.max_turn = 0.05
    release = threading.Event()

    def slow_close() -> Saved:
        tallies.get_tally(slow_one)  # its turn begins ...
        release.wait(timeout=30)  # ... and lasts
        return tallies.close_tally(slow_one, "slowly")

    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(tallies.group_commit.run, slow_close)
        closed = [tallies.close_tally(name, "at once") for name in others]
        release.set()
        late = slow.result(timeout=30)

    assert [saved.version for saved in [*closed, late]] == [2, 2, 2, 2]
    assert late.position > closed[-1].position


def test_a_command_detached_while_others_changed_what_it_read_runs_again(tallies):
    """Seen in CI on a loaded machine: a command outlived its turn, the commands behind it
    changed the same tally, and its own save then met their version: an IntegrityError
    its caller could not have avoided (over HTTP, a 409 for a request nobody raced)."""
    tallies.start_tally("t-1")
    tallies.group_commit.max_turn = 0.05
    release = threading.Event()
    runs = 0

    def slow_add() -> Saved:
        nonlocal runs
        runs += 1
        tally = tallies.get_tally("t-1")  # its turn begins ...
        if runs == 1:
            release.wait(timeout=30)  # ... and lasts, while another command adds
        tally.add(10)
        return tallies._save(tally)

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(tallies.group_commit.run, slow_add)
        wait_for(lambda: runs == 1, timeout=10)
        fast = tallies.add_to_tally("t-1", 1)  # runs once the slow one is detached
        release.set()
        late = slow.result(timeout=30)

    assert (fast.version, late.version, runs) == (2, 3, 2)
    assert tallies.get_tally("t-1").total == 11


def test_a_detached_command_whose_first_save_is_stored_is_never_run_again(tallies, store):
    """Its second save meets another writer's change: that is the caller's conflict, as
    without batching; running the command again would add its first change twice."""
    tallies.start_tally("t-1")
    tallies.group_commit.max_turn = 0.05
    runs = 0

    def add_twice() -> Saved:
        nonlocal runs
        runs += 1
        turn = _current.get()
        assert turn is not None
        tally = tallies.get_tally("t-1")
        wait_for(lambda: turn.state is _State.DETACHED, timeout=10)
        tally.add(10)
        tallies._save(tally)  # stored, in a transaction of its own
        other_process = opened(store)
        try:
            other_process.add_to_tally("t-1", 1)
        finally:
            other_process.close()
        tally.add(100)
        return tallies._save(tally)

    with pytest.raises(IntegrityError):
        tallies.group_commit.run(add_twice)

    assert runs == 1
    assert tallies.get_tally("t-1").total == 11


def test_what_a_command_detached_while_loading_read_is_not_kept_for_later_ones(tallies, store):
    """Seen in the saga: a slow first load (a cold process) outlived its turn, and the
    aggregate it loaded stayed in the identity map, so a later command in the same
    process saw it as it was before another process changed it."""
    tally_id = tallies.start_tally("t-1").tally_id
    tallies.group_commit.max_turn = 0.05

    def load_once_detached() -> Tally:
        turn = _current.get()
        assert turn is not None
        wait_for(lambda: turn.state is _State.DETACHED, timeout=10)
        return tallies.get_tally("t-1")  # outside any turn now: the store

    tallies.group_commit.run(lambda: tallies.group_commit.read(tally_id, load_once_detached))
    other_process = opened(store)
    try:
        other_process.add_to_tally("t-1", 1)
    finally:
        other_process.close()

    assert tallies.close_tally("t-1", "changed my mind").version == 3


# Batches while the committer is busy


class HeldCommit:
    """Holds the committer inside its first batch's transaction until ``let_go``."""

    def __init__(self, app: TalliesApplication, monkeypatch: pytest.MonkeyPatch):
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

    def start_tallies(self, pool: ThreadPoolExecutor, count: int) -> list[Future]:
        """One tally started (its batch is held), then ``count`` more that join while busy."""
        first = pool.submit(self.app.start_tally, new_name())
        assert self.inside.wait(timeout=30)
        rest = [pool.submit(self.app.start_tally, new_name()) for _ in range(count)]
        wait_for(lambda: self.joined() == count, message="commands joined while busy")
        return [first, *rest]

    def let_go(self) -> None:
        self.release.set()


def test_while_the_committer_is_busy_the_next_batches_fill_up_to_the_limit(tallies, monkeypatch):
    tallies.group_commit.max_batch_size = 5
    held = HeldCommit(tallies, monkeypatch)
    with ThreadPoolExecutor(24) as pool:
        started = held.start_tallies(pool, 23)
        held.let_go()
        answers = [answer.result(timeout=60) for answer in started]

    assert held.batch_sizes[0] == 1
    assert sorted(held.batch_sizes[1:]) == [3, 5, 5, 5, 5]  # full batches, then the rest
    positions = [saved.position for saved in answers]
    assert len(set(positions)) == 24
    assert sorted(positions) == [n.id for n in tallies.recorder.select_notifications(1, 100)]


def test_closing_the_application_commits_and_answers_the_commands_in_flight(tallies, monkeypatch):
    held = HeldCommit(tallies, monkeypatch)
    with ThreadPoolExecutor(12) as pool:
        started = held.start_tallies(pool, 10)
        closing = pool.submit(tallies.group_commit.close)
        held.let_go()
        closing.result(timeout=30)
        answers = [answer.result(timeout=30) for answer in started]

    stored = {n.id: n.originator_id for n in tallies.recorder.select_notifications(1, 100)}
    assert {saved.position: saved.tally_id for saved in answers} == stored
    with pytest.raises(RuntimeError, match="closed"):
        tallies.start_tally(new_name())


@pytest.mark.parametrize("reads", [False, True], ids=["joins-the-batch", "takes-a-turn"])
def test_a_command_that_reaches_its_save_or_read_after_close_is_refused_not_left_waiting(
    tallies, reads
):
    """A command that began before close() but reads or saves only once the committer
    has stopped: nothing would ever give it a turn or commit its batch."""
    tallies.start_tally("shared")
    began, closed, answer = threading.Event(), threading.Event(), Future[Saved]()

    def late() -> Saved:
        began.set()
        closed.wait(timeout=30)
        tally = tallies.get_tally("shared") if reads else Tally(new_name(), "items")
        tally.add(1)
        return tallies._save(tally)

    def call() -> None:
        try:
            answer.set_result(tallies.group_commit.run(late))
        except BaseException as error:  # noqa: BLE001 - the answer under test
            answer.set_exception(error)

    threading.Thread(target=call, daemon=True).start()  # daemon: a hang fails, not blocks
    assert began.wait(timeout=30)
    tallies.group_commit.close()
    closed.set()
    with pytest.raises(RuntimeError, match="closed"):
        answer.result(timeout=30)

    assert [version for (_, version, _) in stored_events(tallies)] == [1]  # the first tally


def test_a_command_sent_to_an_api_whose_application_has_closed_is_a_503_to_retry(store):
    settings = TalliesSettings(
        tallies_database_url=store.url("tallies"), tallies_database_schema=store.schema
    )
    with TestClient(create_tallies_api(settings), headers=bearer()) as client:
        assert client.post("/tallies", json={"name": "t-1"}).status_code == 201
        client.app.state.tallies.close()  # as at shutdown, with requests still coming

        response = client.post("/tallies", json={"name": "t-2"})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "shutting down" in response.json()["detail"]


# A crash with batches in flight


def test_killing_the_api_mid_batch_keeps_every_answered_command_and_no_partial_one(
    store, tmp_path: Path
):
    port = free_port()
    env = {**store.env("tallies"), "PYTHONPATH": str(PROJECT)}
    api = processes.api("tallies-api", "tests.kernel_example.api:create_app", port, env, tmp_path)
    url = f"http://127.0.0.1:{port}"
    answered: list[dict] = []
    stop = threading.Event()

    def start_tallies() -> None:
        with httpx.Client(base_url=url, timeout=10, headers=bearer()) as client:
            while not stop.is_set():
                try:
                    response = client.post("/tallies", json={"name": new_name()})
                except httpx.HTTPError:
                    return  # the server is gone
                assert response.status_code == 201, response.text
                answered.append(response.json())

    try:
        wait_for(
            lambda: httpx.get(f"{url}/health").status_code == 200,
            timeout=60,
            ignore=(httpx.HTTPError,),
            message="the tallies API never became healthy",
        )
        with ThreadPoolExecutor(16) as pool:
            clients = [pool.submit(start_tallies) for _ in range(16)]
            wait_for(lambda: len(answered) >= 300, timeout=60, message="tallies answered")
            api.kill()  # SIGKILL, batches in flight
            stop.set()
            for client in clients:
                client.result(timeout=30)
    finally:
        stop.set()
        api.stop()

    app = opened(store)
    try:
        events = stored_events(app)
        positions = {
            notification.id: notification.originator_id
            for notification in app.recorder.select_notifications(1, 100_000)
        }
        for accepted in answered:  # every 201 is stored, where it said
            assert positions[accepted["position"]] == uuid.UUID(accepted["tally_id"])
        # Every stored tally is whole (its one event) and readable; the log has no gaps.
        assert {(version, kind) for (_, version, kind) in events} == {(1, "Started")}
        assert sorted(positions) == list(range(1, len(positions) + 1))
        assert len(events) >= len(answered)
        for aggregate_id in list(positions.values())[-50:]:
            tally: Tally = app.repository.get(aggregate_id)
            assert tally.version == 1
    finally:
        app.close()


# Consumed messages' commands, run in order with their positions (saga workers)


def position(name: str, offset: int) -> Tracking:
    """The tracking record of the message at ``offset`` of partition ``name``."""
    return Tracking(name, offset + 1)


def adding(app: TalliesApplication, name: str, amount: int) -> Callable[[], None]:
    """A message's command: get → mutate → save, the save being its last step."""

    def add() -> None:
        tally = app.get_tally(name)
        tally.add(amount)
        app.save(tally)

    return add


def test_messages_run_in_order_in_one_transaction_with_their_positions(tallies):
    tallies.start_tally("t-1")
    amounts = list(range(1, 21))
    commits = commits_of(tallies)

    settled = tallies.group_commit.run_in_order(
        [adding(tallies, "t-1", amount) for amount in amounts],
        [position("worker:topic:0", offset) for offset in range(20)],
    )

    assert all(outcome.done for outcome in settled)
    assert len(commits) == 1, "the messages' events and positions took more than one transaction"
    tally_id = Tally.create_id("t-1")
    totals_by_version = [tallies.repository.get(tally_id, version=v).total for v in range(2, 22)]
    assert totals_by_version == list(itertools.accumulate(amounts)), "not in the messages' order"
    assert tallies.recorder.max_tracking_id("worker:topic:0") == 20


def test_a_message_that_fails_records_nothing_and_holds_back_its_partition_only(tallies):
    for name in ("t-1", "t-2"):
        tallies.start_tally(name)
    before = tallies.recorder.max_notification_id()

    def refuse() -> None:
        tallies.get_tally("t-1")
        raise DomainError("no")

    settled = tallies.group_commit.run_in_order(
        [adding(tallies, "t-1", 1), refuse, adding(tallies, "t-1", 2), adding(tallies, "t-2", 5)],
        [
            position("worker:topic:0", 0),
            position("worker:topic:0", 1),
            position("worker:topic:0", 2),
            position("worker:topic:1", 0),
        ],
    )

    assert [(o.done, o.rerun, type(o.error)) for o in settled] == [
        (True, False, type(None)),
        (False, False, DomainError),
        (False, True, type(None)),  # after the failed one, in its partition: run it again
        (True, False, type(None)),  # another partition: stored
    ]
    assert [(v, kind) for (_, v, kind) in stored_events(tallies, before)] == [
        (2, "Added"),
        (2, "Added"),
    ]
    assert tallies.get_tally("t-1").total == 1
    assert tallies.get_tally("t-2").total == 5
    assert tallies.recorder.max_tracking_id("worker:topic:0") == 1  # up to the first only
    assert tallies.recorder.max_tracking_id("worker:topic:1") == 1


def test_a_message_recorded_before_is_refused_with_its_partition_and_nothing_is_stored(tallies):
    tallies.start_tally("t-1")
    tallies.group_commit.run_in_order(
        [adding(tallies, "t-1", 1)], [position("worker:topic:0", 4)]
    )  # handled once: the partition's position is 5

    settled = tallies.group_commit.run_in_order(
        [adding(tallies, "t-1", 10), adding(tallies, "t-1", 100), adding(tallies, "t-1", 1000)],
        [position("worker:topic:0", 3), position("worker:topic:0", 5), position("other:0", 0)],
    )

    # The whole partition's batch is refused (its caller filters what was handled, and
    # runs the rest again); the other partition's message read what it staged.
    assert isinstance(settled[0].error, IntegrityError)
    assert isinstance(settled[1].error, IntegrityError)
    assert settled[2].rerun
    assert tallies.get_tally("t-1").total == 1
    assert tallies.recorder.max_tracking_id("worker:topic:0") == 5
    assert tallies.recorder.max_tracking_id("other:0") is None


def test_a_message_whose_aggregate_another_writer_changed_is_refused_its_partition_waits(
    tallies, store
):
    tallies.start_tally("t-1")
    tallies.start_tally("t-2")
    elsewhere = opened(store)  # another process's Application on the same store

    def add_while_another_writer_adds() -> None:
        tally = tallies.get_tally("t-1")  # version 1
        elsewhere.add_to_tally("t-1", 7)  # version 2, stored meanwhile
        tally.add(1)  # also version 2
        tallies.save(tally)

    try:
        settled = tallies.group_commit.run_in_order(
            [add_while_another_writer_adds, adding(tallies, "t-2", 2), adding(tallies, "t-1", 3)],
            [
                position("worker:topic:0", 0),
                position("worker:topic:1", 0),
                position("worker:topic:0", 1),
            ],
        )
    finally:
        elsewhere.close()

    assert isinstance(settled[0].error, IntegrityError)
    assert settled[1].done
    assert settled[2].rerun
    assert tallies.get_tally("t-1").total == 7
    assert tallies.get_tally("t-2").total == 2
    assert tallies.recorder.max_tracking_id("worker:topic:0") is None
    assert tallies.recorder.max_tracking_id("worker:topic:1") == 1


# Automatic snapshots under group commit


class SnapshottingTallies(TalliesApplication):
    name = "tallies"  # the same tables
    snapshotting_intervals = {Tally: 5}  # noqa: RUF012 - eventsourcing's class setting
    env: ClassVar[dict[str, str]] = {}  # no aggregate cache: every command loads


def reading(app: ServiceApplication) -> list[int]:
    """A list that fills with the versions of the events the app reads from now on."""
    read: list[int] = []
    select_events = app.events.recorder.select_events

    def counting(*args: Any, **kwargs: Any) -> Any:
        found = select_events(*args, **kwargs)
        read.extend(event.originator_version for event in found)
        return found

    app.events.recorder.select_events = counting  # type: ignore[method-assign]
    return read


def test_concurrent_commands_across_snapshot_boundaries_give_the_state_without_snapshots(store):
    snapshotting = open_application(SnapshottingTallies, store.url("tallies"), store.schema)
    plain = opened(store)  # the same store, no snapshots
    try:
        for app in (snapshotting, plain):
            app.start_tally(f"{type(app).__name__}-t")
        start = threading.Barrier(24, timeout=30)

        def add(i: int) -> Saved:
            start.wait()
            app = snapshotting if i < 12 else plain
            return app.add_to_tally(f"{type(app).__name__}-t", i % 12 + 1)

        with ThreadPoolExecutor(24) as pool:
            list(pool.map(add, range(24)))  # twelve commands on each tally, concurrently
        with ThreadPoolExecutor(12) as pool:  # and twelve more, without a barrier
            list(
                pool.map(
                    lambda i: snapshotting.add_to_tally("SnapshottingTallies-t", i), range(1, 13)
                )
            )
            list(pool.map(lambda i: plain.add_to_tally("TalliesApplication-t", i), range(1, 13)))

        with_snapshots = snapshotting.get_tally("SnapshottingTallies-t")
        without = plain.get_tally("TalliesApplication-t")
        assert (with_snapshots.version, with_snapshots.total) == (without.version, without.total)
        assert with_snapshots.version == 25
        tally_id = with_snapshots.id
        assert snapshotting.snapshots is not None
        taken = [s.originator_version for s in snapshotting.snapshots.get(tally_id)]
        assert taken == [5, 10, 15, 20, 25]  # one at each boundary, none missed or twice
        for snapshot in snapshotting.snapshots.get(tally_id):
            from_snapshot = snapshot.mutate(None)
            from_events = plain.repository.get(tally_id, version=snapshot.originator_version)
            assert from_snapshot.total == from_events.total
        assert plain.snapshots is None or not list(plain.snapshots.get(without.id))
    finally:
        snapshotting.close()
        plain.close()


def test_a_command_on_an_aggregate_with_a_long_history_loads_from_its_last_snapshot(store):
    app = open_application(SnapshottingTallies, store.url("tallies"), store.schema)
    try:
        app.start_tally("long")
        for amount in range(1, 53):
            app.add_to_tally("long", amount)
        read = reading(app)
        saved = app.add_to_tally("long", 1)
    finally:
        app.close()

    assert saved.version == 54
    assert read == [51, 52, 53], "the command read events its last snapshot (50) holds"


def test_messages_with_nothing_to_run_are_recorded_with_their_partition_and_no_turn(tallies):
    tallies.start_tally("t-1")
    turns = []
    started = tallies.group_commit._start

    def counting(turn: Any, batch: Any) -> None:
        turns.append(turn)
        started(turn, batch)

    tallies.group_commit._start = counting  # type: ignore[method-assign]

    def refuse() -> None:
        raise DomainError("no")

    settled = tallies.group_commit.run_in_order(
        [None, adding(tallies, "t-1", 1), None, None, refuse, None, None, None],
        [
            position("p0", 0),
            position("p0", 1),
            position("p0", 2),
            position("p1", 0),  # a partition with nothing to run
            position("p2", 0),
            position("p2", 1),  # after a failure: not recorded
            position("p1", 1),
            position("p0", 3),
        ],
    )

    assert len(turns) == 3  # the two commands, and p1's positions alone
    assert [outcome.done for outcome in settled] == [
        True,
        True,
        True,
        True,
        False,
        False,
        True,
        True,
    ]
    assert settled[5].rerun
    assert tallies.get_tally("t-1").total == 1
    assert tallies.recorder.max_tracking_id("p0") == 4
    assert tallies.recorder.max_tracking_id("p1") == 2
    assert tallies.recorder.max_tracking_id("p2") is None


def test_a_cached_aggregate_is_brought_up_to_date_with_what_another_process_stored(store):
    app = opened(store)  # with the aggregate cache (the default)
    elsewhere = opened(store)  # another process on the same store
    try:
        app.start_tally("t-1")
        app.add_to_tally("t-1", 1)  # loads it: now in the cache
        elsewhere.add_to_tally("t-1", 10)
        elsewhere.add_to_tally("t-1", 100)
        read = reading(app)

        saved = app.add_to_tally("t-1", 1000)

        assert saved.version == 5
        assert read == [3, 4], "the cached tally was not fast-forwarded, or was rebuilt"
        assert app.get_tally("t-1").total == 1111
    finally:
        app.close()
        elsewhere.close()
