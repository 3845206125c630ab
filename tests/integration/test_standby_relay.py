"""Two relays of one log (docs/adr/0029): one leads and publishes, the other waits and takes
over within 5 s of the leader's `kill -9`; a leader that lost its leadership cannot record
a position (fencing); a leader whose lead ends as a commit wakes it still stops. Real
processes (in-process for that last race), a real broker, SQLite and PostgreSQL stores, on
the kernel's own tallies domain.
"""

import asyncio
import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from devstack.processes import python_module
from kernel.kafka import stop_producer
from kernel.leadership import Fenced, Leadership, election_for
from kernel.relay import Relay
from tests import processes
from tests.integration.kafka_reading import read_all, read_topic
from tests.integration.test_relay import (
    assert_complete_and_in_order,
    envelopes_of,
    every_position,
    relay_settings,
    write_tallies,
)
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.contracts import TOPIC, registered
from tests.kernel_example.relay import open_tallies, tallies_relay
from tests.stores import POSTGRES_URL, Store
from tests.support import wait_for, wait_for_async

PROJECT = Path(__file__).resolve().parents[2]
TRACKED = f"relay:{TOPIC}"
LEADS = "becomes the leader"
WAITS = "waits: another relay leads"
FENCED = "is fenced"
LOST = "lost its leadership"
TAKEOVER_DEADLINE = 5.0
"""Seconds from the leader's death until the standby has published what it left."""


@pytest.fixture(autouse=True)
def tally_contracts() -> Iterator[None]:
    with registered():
        yield


def start_relay(env: dict[str, str], log_dir: Path, name: str) -> processes.Process:
    argv = python_module("tests.kernel_example.relay")
    return processes.Process(name, argv, {**env, "PYTHONPATH": str(PROJECT)}, log_dir)


def full_log(relay: processes.Process) -> str:
    return relay.log_path.read_text(errors="replace")


def relay_env(kafka: str, store: Store, **settings: str) -> dict[str, str]:
    return {
        **store.env("tallies"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "RELAY_POLL_INTERVAL": "0.01",
        **settings,
    }


def recorded_position(app: TalliesApplication) -> int:
    return app.recorder.max_tracking_id(TRACKED) or 0


def start_leader_and_standby(
    env: dict[str, str], tmp_path: Path
) -> tuple[processes.Process, processes.Process]:
    """The first relay leads; the second, started once it does, waits."""
    leader = start_relay(env, tmp_path, "relay-a")
    wait_for(lambda: LEADS in full_log(leader), timeout=30, message=leader.log())
    standby = start_relay(env, tmp_path, "relay-b")
    wait_for(lambda: WAITS in full_log(standby), timeout=30, message=standby.log())
    return leader, standby


def test_of_two_relays_only_the_leader_publishes(kafka, store, tmp_path: Path):
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    leader, standby = start_leader_and_standby(relay_env(kafka, store), tmp_path)
    try:
        last = write_tallies(app, 30)
        wait_for(lambda: recorded_position(app) == last, timeout=30, message=leader.log())
        records = asyncio.run(read_all(kafka, TOPIC))
    finally:
        standby.stop()
        leader.stop()
        app.close()
    envelopes = envelopes_of(records)
    assert_complete_and_in_order(envelopes, last)
    copies = Counter((e.sequence, e.type) for e in envelopes)
    assert set(copies.values()) == {1}, "an event was published twice: two relays published"
    assert LEADS not in full_log(standby), standby.log()
    assert (leader.popen.returncode, standby.popen.returncode) == (0, 0)


def test_the_standby_takes_over_within_5_s_of_the_leaders_kill_9(kafka, store, tmp_path: Path):
    """Default lease and check interval: what `make run` and compose run."""
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    leader, standby = start_leader_and_standby(
        relay_env(kafka, store, RELAY_BATCH_SIZE="7"), tmp_path
    )
    stop_writing = threading.Event()

    def write_until_stopped() -> None:
        for round_number in range(1000):
            if stop_writing.is_set():
                return
            write_tallies(app, 4, rounds=2, prefix=f"round-{round_number}")

    writer = threading.Thread(target=write_until_stopped)
    writer.start()
    try:
        wait_for(lambda: recorded_position(app) > 0, timeout=30, message=leader.log())
        written_at_kill = app.recorder.max_notification_id() or 0
        leader.kill()
        killed_at = time.monotonic()
        wait_for(lambda: LEADS in full_log(standby), timeout=10, message=standby.log())
        leads_after = time.monotonic() - killed_at
        wait_for(
            lambda: recorded_position(app) >= written_at_kill,
            timeout=max(0.0, killed_at + TAKEOVER_DEADLINE - time.monotonic()),
            message=f"not published within {TAKEOVER_DEADLINE} s of the kill\n{standby.log()}",
        )
        published_after = time.monotonic() - killed_at
        wait_for(lambda: recorded_position(app) > written_at_kill + 20, timeout=30)
        stop_writing.set()
        writer.join(timeout=60)
        last = app.recorder.max_notification_id() or 0
        records = asyncio.run(read_topic(kafka, TOPIC, until=every_position(last), timeout=60))
    finally:
        stop_writing.set()
        writer.join(timeout=60)
        standby.stop()
        leader.stop()
        app.close()
    print(f"takeover: leads {leads_after:.2f} s, published {published_after:.2f} s after kill -9")
    assert_complete_and_in_order(envelopes_of(records), last)
    assert written_at_kill < last, "the leader was not killed mid-stream"
    standby_log = full_log(standby)
    assert standby_log.index(WAITS) < standby_log.index(LEADS), standby_log
    assert standby.popen.returncode == 0, standby.log()


def test_a_paused_leader_cannot_record_once_the_standby_leads(kafka, store, tmp_path: Path):
    """SIGSTOP the leader past its lease: the standby leads. SIGCONT: the old leader's
    write of the position it had acknowledged (its records are 60 s apart, so it holds
    one) is refused, it stops publishing and waits. The position stays the new leader's."""
    env = relay_env(
        kafka,
        store,
        RELAY_BATCH_SIZE="7",
        RELAY_RECORD_INTERVAL="60",
        RELAY_LEASE_SECONDS="2",
        RELAY_STANDBY_CHECK_INTERVAL="0.2",
    )
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    first = write_tallies(app, 30)
    leader, standby = start_leader_and_standby(env, tmp_path)
    paused = False
    try:
        # The leader recorded its first batch, then acknowledged everything, unrecorded.
        leaders_record = wait_for(lambda: recorded_position(app), timeout=30)
        asyncio.run(read_topic(kafka, TOPIC, until=every_position(first)))
        assert leaders_record < first
        os.kill(leader.pid, signal.SIGSTOP)
        paused = True
        wait_for(lambda: LEADS in full_log(standby), timeout=10, message=standby.log())
        standbys_record = wait_for(
            lambda: (position := recorded_position(app)) > leaders_record and position,
            timeout=30,
            message=standby.log(),
        )
        assert standbys_record < first, "the new leader records its first batch, then waits 60 s"
        os.kill(leader.pid, signal.SIGCONT)
        paused = False
        # It stops publishing, tries to record what it had acknowledged, and waits again.
        wait_for(lambda: WAITS in full_log(leader), timeout=10, message=leader.log())
        assert recorded_position(app) == standbys_record, "the old leader moved the position"
        assert FENCED in full_log(leader), leader.log()
        later = write_tallies(app, 5, prefix="later")
        records = asyncio.run(read_topic(kafka, TOPIC, until=every_position(later)))
        assert recorded_position(app) == standbys_record
        standby.stop()
        assert recorded_position(app) == later, "the new leader records on its way out"
    finally:
        if paused:
            os.kill(leader.pid, signal.SIGCONT)
        standby.stop()
        leader.stop()
        app.close()
    leaders_log = full_log(leader)
    assert re.search(r"is fenced: position \d+ not recorded", leaders_log), leaders_log
    assert leaders_log.index(FENCED) < leaders_log.index(WAITS), leaders_log
    later_copies = Counter(
        (e.sequence, e.type) for e in envelopes_of(records) if e.sequence > first
    )
    assert set(later_copies.values()) == {1}, "the fenced relay published again"
    assert_complete_and_in_order(envelopes_of(records), later)
    assert (leader.popen.returncode, standby.popen.returncode) == (0, 0)


class HeldWatch:
    """A commit watch that announces a commit only when the test calls ``announce``."""

    active = True  # the relay polls at its watched interval: here, never

    def __init__(self) -> None:
        self.changed: asyncio.Event | None = None

    async def __call__(self, changed: asyncio.Event) -> None:
        self.changed = changed
        await asyncio.Event().wait()

    def announce(self) -> None:
        assert self.changed is not None
        self.changed.set()


STOPS_WITHIN = 10.0
"""Seconds a relay takes at most to stop publishing (it takes milliseconds)."""


async def end_as_a_commit_is_announced(
    relay: Relay, ending: str, offset: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the relay until it waits for a commit; then end its lead (``ending``: it is
    stopped, or it loses its leadership) and announce a commit ``offset`` event-loop
    iterations apart (the announcement first when negative); check that it stops
    publishing, then that it stops."""
    watch = HeldWatch()
    monkeypatch.setattr(relay, "watch_commits", watch)
    waits_for_commits = 0

    def poll_interval() -> float:  # called as the relay starts waiting for a commit
        nonlocal waits_for_commits
        waits_for_commits += 1
        return 3600.0

    monkeypatch.setattr(relay, "current_poll_interval", poll_interval)
    lost = asyncio.Event()

    async def keep() -> None:  # Leadership.keep returns once the leadership is lost
        await lost.wait()

    assert relay.leadership is not None
    monkeypatch.setattr(relay.leadership, "keep", keep)
    stopping = asyncio.Event()
    running = asyncio.create_task(relay.run(stopping))
    try:
        await wait_for_async(lambda: waits_for_commits, message="the relay never went idle")
        end = stopping.set if ending == "stopped" else lost.set
        first, second = (end, watch.announce) if offset >= 0 else (watch.announce, end)
        first()
        for _ in range(abs(offset)):
            await asyncio.sleep(0)  # one iteration of the event loop, not a span of time
        second()
        await wait_for_async(
            lambda: not relay.leading,
            timeout=STOPS_WITHIN,
            message=f"{ending} {offset:+d} iterations from a commit: still publishing",
        )
        stopping.set()
        done, _ = await asyncio.wait({running}, timeout=STOPS_WITHIN)
        assert done, f"{ending} {offset:+d} iterations from a commit: the relay did not stop"
        running.result()
    finally:
        running.cancel()
        await asyncio.wait({running}, timeout=STOPS_WITHIN)


@pytest.mark.parametrize("ending", ["stopped", "lost its leadership"])
async def test_a_leader_stops_publishing_however_close_to_a_commit_its_lead_ends(
    store, ending: str
):
    """A relay waiting for a commit is cancelled as the commit's announcement wakes it:
    it stops all the same, for each order of the two within a few event-loop iterations
    (asyncio.wait_for lost that cancellation on Python 3.11, CPython gh-86296, and the
    relay went on waiting for commits, neither publishing nor standing by)."""
    settings = relay_settings(store, relay_wake_on_commit=False)
    app = open_tallies(settings)
    relay = tallies_relay(app, settings)  # the log is empty: nothing is sent
    try:
        for offset in range(-8, 9):
            with pytest.MonkeyPatch.context() as patched:
                await end_as_a_commit_is_announced(relay, ending, offset, patched)
    finally:
        await stop_producer(relay.producer)
        app.close()


def on_postgres(sql: str, **params: Any) -> list[Any]:
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sqlalchemy.text(sql), params))
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_leader_whose_lock_session_died_steps_aside(kafka, store, tmp_path: Path):
    """The lock's session terminated (as a network cut-off ends it): the standby takes
    the lock within 5 s; the old leader notices, stops publishing and waits."""
    env = relay_env(kafka, store, RELAY_LEASE_SECONDS="2", RELAY_STANDBY_CHECK_INTERVAL="0.2")
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    leader, standby = start_leader_and_standby(env, tmp_path)
    try:
        [lock_session] = on_postgres(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE a.application_name = :name AND l.locktype = 'advisory' AND l.granted",
            name=f"{TRACKED} leader {store.schema}",  # the standby's session holds no lock
        )
        on_postgres("SELECT pg_terminate_backend(:pid)", pid=lock_session.pid)
        cut_at = time.monotonic()
        wait_for(
            lambda: LEADS in full_log(standby), timeout=TAKEOVER_DEADLINE, message=standby.log()
        )
        print(f"takeover after the lock's session died: {time.monotonic() - cut_at:.2f} s")
        wait_for(lambda: LOST in full_log(leader), timeout=10, message=leader.log())
        wait_for(lambda: WAITS in full_log(leader), timeout=10, message=leader.log())
        last = write_tallies(app, 5)
        wait_for(lambda: recorded_position(app) == last, timeout=30, message=standby.log())
    finally:
        standby.stop()
        leader.stop()
        app.close()
    # The old leader leads again only once the standby has let go (a machine too loaded
    # for it to confirm in time makes it step aside, as designed).
    if full_log(leader).count(LEADS) > 1:
        assert LOST in full_log(standby), "the old leader took the lock while the standby led"


def test_a_relay_that_no_longer_leads_cannot_record_its_position(store):
    """The fencing itself: the old leader's write is refused in its transaction, the new
    leader's goes through (SQLite: the lease ran out; PostgreSQL: the lock's session ended)."""
    app = open_tallies(relay_settings(store))
    lease = 0.5
    old = election_for(app.recorder, TRACKED, lease)
    new = election_for(app.recorder, TRACKED, lease)
    assert old is not None and new is not None
    old_leader = Leadership(old, check_interval=0.1)
    new_leader = Leadership(new, check_interval=0.1)
    try:
        old_epoch = old_leader.epoch = old.try_to_lead()
        assert old_epoch is not None and new.try_to_lead() is None
        old_leader.record_position(TRACKED, 10)
        if store.schema:  # PostgreSQL: the session ends, and its lock with it
            old._close()  # type: ignore[attr-defined]
        new_epoch = new_leader.epoch = wait_for(new.try_to_lead, timeout=lease * 10)
        assert new_epoch > old_epoch
        with pytest.raises(Fenced, match="position 20 not recorded"):
            old_leader.record_position(TRACKED, 20)
        assert recorded_position(app) == 10
        new_leader.record_position(TRACKED, 15)
        assert recorded_position(app) == 15
        assert not old.confirm(old_epoch)
        assert new.confirm(new_epoch)
    finally:
        for election, leader in ((old, old_leader), (new, new_leader)):
            election.step_down(leader.epoch or 0)
            election.close()
        app.close()


async def test_a_leader_stopping_steps_down_without_saying_it_waits_to_lead_again(store, caplog):
    """It does not wait: the log tells the truth (it once said it would ask in 3 s)."""
    caplog.set_level(logging.INFO, logger="kernel.leadership")
    app = open_tallies(relay_settings(store))
    election = election_for(app.recorder, TRACKED, 3.0)
    assert election is not None
    leadership = Leadership(election, check_interval=0.1)
    stopping = asyncio.Event()
    try:
        assert await leadership.wait_to_lead(stopping)
        stopping.set()
        caplog.clear()
        await leadership.step_down()

        assert not await leadership.wait_to_lead(stopping, lost_it=True)

        assert "steps down" in caplog.text and "waits" not in caplog.text
    finally:
        await leadership.close()
        app.close()
