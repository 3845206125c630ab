"""The relay against a real broker, with the event store on SQLite and on PostgreSQL.

On the kernel's own tallies domain (tests/kernel_example), so a project made without the
reference saga keeps these tests: every event published in order with CloudEvents headers,
the position recorded only after the broker's acks, nothing lost when the relay is killed
mid-stream and restarted, and the setting that decides which majors are published.
"""

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from contracts import registry
from contracts.envelope import Envelope
from devstack.processes import python_module
from devstack.servers import KafkaBroker, free_port
from kernel.kafka import ensure_topics, fetch_wakeups, stop_producer
from kernel.metadata import MessageMetadata, caused_by
from kernel.wakeup import PostgresListener, commit_watch, is_active
from tests import processes
from tests.integration.kafka_reading import read_topic
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.contracts import TOPIC, registered
from tests.kernel_example.relay import TalliesRelaySettings, open_tallies, tallies_relay
from tests.stores import POSTGRES_URL, Store
from tests.support import wait_for, wait_for_async

PROJECT = Path(__file__).resolve().parents[2]
"""Where the tallies relay's module is (the kill test runs it in a process of its own)."""


@pytest.fixture(autouse=True)
def tally_contracts() -> Iterator[None]:
    """The registry knows the tallies' contracts only while each test runs."""
    with registered():
        yield


def relay_settings(store: Store, **overrides: Any) -> TalliesRelaySettings:
    return TalliesRelaySettings(
        tallies_database_url=store.url("tallies"),
        tallies_database_schema=store.schema,
        **overrides,
    )


def write_tallies(
    app: TalliesApplication,
    count: int,
    rounds: int = 2,
    close_every: int = 3,
    prefix: str = "tally",
) -> int:
    """Start ``count`` tallies and add to each at once (events of one aggregate next to
    each other in the log), then add to each of them ``rounds - 1`` more times in turn
    (the aggregates' events interleave), close every ``close_every``-th; return the
    last position."""
    names = [f"{prefix}-{i}" for i in range(count)]
    for i, name in enumerate(names):
        app.start_tally(name, unit=f"unit-{i % 4}")
        app.add_to_tally(name, 1)
    for amount in range(2, rounds + 1):
        for name in names:
            app.add_to_tally(name, amount)
    for name in names[::close_every]:
        app.close_tally(name, "counted")
    return app.recorder.max_notification_id() or 0


def envelopes_of(records: list[ConsumerRecord[bytes, bytes]]) -> list[Envelope]:
    return [Envelope.from_bytes(r.value) for r in records]


def every_position(last: int) -> Callable[[list[ConsumerRecord[bytes, bytes]]], bool]:
    return lambda records: (
        {Envelope.from_bytes(r.value).sequence for r in records} >= set(range(1, last + 1))
    )


def assert_complete_and_in_order(envelopes: list[Envelope], last_position: int) -> None:
    """Every position 1..last is there, and each aggregate's versions arrive in order."""
    assert {e.sequence for e in envelopes} == set(range(1, last_position + 1))
    seen: dict[str, int] = {}
    for envelope in envelopes:  # records of one key come from one partition, in order
        previous = seen.get(envelope.subject, 0)
        assert envelope.aggregateversion <= previous + 1, "a version was skipped"
        seen[envelope.subject] = max(previous, envelope.aggregateversion)


async def test_relay_publishes_every_event_in_order_with_cloudevents_headers(kafka, store):
    settings = relay_settings(store, kafka_bootstrap_servers=kafka)
    app = open_tallies(settings)
    with caused_by(MessageMetadata(correlation_id="corr-1", causation_id="cause-1")):
        first = app.start_tally("first", unit="apples")
    last = write_tallies(app, 30)
    relay = tallies_relay(app, settings)
    await ensure_topics(kafka, {TOPIC: 4})
    await relay.producer.start()
    try:
        position, read = await relay.publish_next_batch(0)
    finally:
        await relay.producer.stop()
    assert (position, read) == (last, last), "one call publishes the whole batch"
    assert relay.position() == last

    records = await read_topic(kafka, TOPIC, until=every_position(last))
    envelopes = envelopes_of(records)
    assert_complete_and_in_order(envelopes, last)
    assert all(r.key == e.subject.encode() for r, e in zip(records, envelopes, strict=True))
    assert {e.source for e in envelopes} == {"tallies"}
    for envelope in envelopes:  # each one's data is valid in the contract its type names
        model = registry.model_of(envelope.type)
        assert model is not None, envelope.type
        model.model_validate(envelope.data)

    [record, v1_record] = [r for r, e in zip(records, envelopes, strict=True) if e.sequence == 1]
    headers = dict(record.headers)
    started = Envelope.from_bytes(record.value)
    assert started.type == "tallies.TallyStarted.v2"
    assert started.subject == str(first.tally_id)
    assert (started.aggregateversion, started.specversion) == (1, "1.0")
    assert started.data == {
        "tally_id": str(first.tally_id),
        "tally_name": "first",
        "unit": "apples",
    }
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"].decode() == started.id
    assert headers["ce_type"] == b"tallies.TallyStarted.v2"
    assert headers["ce_source"] == b"tallies"
    assert headers["ce_subject"].decode() == str(first.tally_id)
    assert headers["ce_time"].decode() == started.time.isoformat()
    assert headers["content-type"] == b"application/cloudevents+json"
    assert headers["ce_correlationid"] == b"corr-1"
    assert headers["ce_causationid"] == b"cause-1"
    # The transition period (TALLIES_RELAY_ALSO_PUBLISH): the v1 copy follows, as one event.
    v1 = Envelope.from_bytes(v1_record.value)
    assert dict(v1_record.headers)["ce_type"] == b"tallies.TallyStarted.v1"
    assert (v1.type, v1.id, v1.aggregateversion) == ("tallies.TallyStarted.v1", started.id, 1)
    assert v1.data == {"tally_id": str(first.tally_id), "label": "first (apples)"}
    assert sum(e.type == "tallies.TallyStarted.v1" for e in envelopes) == 31
    assert sum(e.type == "tallies.TallyStarted.v2" for e in envelopes) == 31
    app.close()


@pytest.mark.parametrize(
    ("also_publish", "started_types"),
    [
        (None, ["tallies.TallyStarted.v2", "tallies.TallyStarted.v1"]),  # the default
        (frozenset(), ["tallies.TallyStarted.v2"]),  # after the transition
    ],
    ids=["transition", "after-transition"],
)
async def test_the_setting_decides_which_majors_the_relay_publishes(
    store, also_publish, started_types
):
    overrides = {} if also_publish is None else {"tallies_relay_also_publish": also_publish}
    settings = relay_settings(store, **overrides)
    app = open_tallies(settings)
    app.start_tally("t-1")
    app.add_to_tally("t-1", 3)
    app.close_tally("t-1", "counted")
    relay = tallies_relay(app, settings)  # the producer is not started: nothing is sent
    try:
        notifications = app.recorder.select_notifications(1, 10)
        published = [[e.type for e in relay.encoder.envelopes(n)] for n in notifications]
    finally:
        await stop_producer(relay.producer, timeout=1)
        app.close()

    assert published == [started_types, ["tallies.TallyAdded.v1"], ["tallies.TallyClosed.v1"]]


async def test_the_relay_sends_each_envelope_as_the_envelope_model_writes_it(store):
    settings = relay_settings(store)  # publishes TallyStarted in v2 and v1
    app = open_tallies(settings)
    with caused_by(MessageMetadata(correlation_id='corr "1"', causation_id="cause-é")):
        app.start_tally("first", unit="apples")
    last = write_tallies(app, 5)
    relay = tallies_relay(app, settings)  # the producer is not started: nothing is sent
    try:
        notifications = app.recorder.select_notifications(1, last)
        sent = [relay.encoder.messages(n) for n in notifications]
        modelled = [
            [
                (e.to_bytes(), e.subject.encode(), e.kafka_headers())
                for e in relay.encoder.envelopes(n)
            ]
            for n in notifications
        ]
    finally:
        await stop_producer(relay.producer, timeout=1)
        app.close()
    assert sent == modelled
    assert sum(len(messages) for messages in sent) == last + 6  # v1 copies of 6 starts


async def test_the_relay_refuses_a_setting_naming_a_major_it_cannot_publish(store):
    settings = relay_settings(
        store, tallies_relay_also_publish=frozenset({"tallies.TallyAdded.v0"})
    )
    app = open_tallies(settings)
    try:
        with pytest.raises(ValueError, match="cannot also publish tallies.TallyAdded.v0"):
            tallies_relay(app, settings)
    finally:
        app.close()


async def test_relay_keeps_its_position_when_the_broker_does_not_acknowledge(store, tmp_path):
    with KafkaBroker(tmp_path / "doomed-kafka") as broker:  # stopped by PID on the way out
        settings = relay_settings(store, kafka_bootstrap_servers=broker.bootstrap)
        app = open_tallies(settings)
        write_tallies(app, 5)
        relay = tallies_relay(app, settings)
        relay.producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=1000,
        )
        await ensure_topics(broker.bootstrap, {TOPIC: 4})
        await relay.producer.start()
        broker.stop()  # the broker goes away: no send can be acknowledged
        try:
            with pytest.raises((KafkaError, TimeoutError)):
                await asyncio.wait_for(relay.publish_next_batch(0), timeout=3)
        finally:
            await stop_producer(relay.producer, timeout=1)
            app.close()
        assert relay.position() == 0


# The pipeline (docs/adr/0003): the next batch is read and sent while the previous one is
# acknowledged and recorded; a position is recorded only after every message up to it
# was acknowledged, positions in order.


WAITS = "waits for the broker"
"""The relay's warning when its pipeline is full and acks do not come."""


def watch_positions(app: TalliesApplication, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The positions the relay records, in the order it records them."""
    recorded: list[int] = []
    record = app.recorder.record_position

    def recording(name: str, position: int, **fence: Any) -> None:
        record(name, position, **fence)  # a leading relay's write is fenced (docs/adr/0029)
        recorded.append(position)

    monkeypatch.setattr(app.recorder, "record_position", recording)
    return recorded


def assert_in_notification_order_per_partition(records: list[ConsumerRecord[bytes, bytes]]) -> None:
    """On each partition, in offset order, positions never go back (one event's copies
    of several majors share a position)."""
    partitions: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
    for record in records:
        partitions.setdefault(record.partition, []).append(record)
    for partition, in_partition in partitions.items():
        in_partition.sort(key=lambda r: r.offset)
        sequences = [Envelope.from_bytes(r.value).sequence for r in in_partition]
        assert sequences == sorted(sequences), f"partition {partition} is out of order"


async def test_the_pipelined_relay_publishes_in_order_with_no_gaps_across_many_batches(
    kafka, store, monkeypatch
):
    settings = relay_settings(
        store,
        kafka_bootstrap_servers=kafka,
        relay_batch_size=7,
        relay_batches_in_flight=2,
        relay_record_interval=0,  # a position as soon as acknowledged, to see the overlap
    )
    app = open_tallies(settings)
    last = write_tallies(app, 40, rounds=3)
    relay = tallies_relay(app, settings)
    recorded = watch_positions(app, monkeypatch)
    steps: list[tuple[str, int]] = []  # ("read", after) as a read starts, ("recorded", position)
    read_batch = relay.read_batch

    def reading(position: int) -> Any:
        steps.append(("read", position))
        return read_batch(position)

    monkeypatch.setattr(relay, "read_batch", reading)
    monkeypatch.setattr(
        app.recorder,
        "record_position",
        lambda name, position, record=app.recorder.record_position: (
            record(name, position),
            steps.append(("recorded", position)),
        ),
    )
    await ensure_topics(kafka, {TOPIC: 4})
    await relay.producer.start()
    try:
        assert await relay.catch_up() == last
    finally:
        await stop_producer(relay.producer)
    assert relay.position() == last

    records = await read_topic(kafka, TOPIC, until=every_position(last))
    envelopes = envelopes_of(records)
    assert_complete_and_in_order(envelopes, last)
    assert_in_notification_order_per_partition(records)
    assert len({(e.sequence, e.type) for e in envelopes}) == len(envelopes), "nothing sent twice"
    # Positions recorded in order, each the end of a batch, the last one at the end of the log.
    assert recorded == sorted(set(recorded)) and recorded[-1] == last
    assert all(p % 7 == 0 for p in recorded[:-1]), recorded
    # Pipelined: the batch after a position is read before that position is recorded.
    assert len(recorded) > 1, recorded
    overlapped = [
        position
        for position in recorded[:-1]
        if steps.index(("read", position)) < steps.index(("recorded", position))
    ]
    assert overlapped == recorded[:-1], steps
    app.close()


async def test_the_position_never_passes_unacknowledged_messages_when_the_broker_stops(
    store, tmp_path, monkeypatch, caplog
):
    broker = KafkaBroker(tmp_path / "kafka").start()  # stopped by PID, then started again
    try:
        settings = relay_settings(
            store,
            kafka_bootstrap_servers=broker.bootstrap,
            relay_batch_size=5,
            relay_batches_in_flight=2,
            relay_ack_warning_after=0.2,
        )
        app = open_tallies(settings)
        recorded = watch_positions(app, monkeypatch)
        published = write_tallies(app, 10)
        relay = tallies_relay(app, settings)
        relay.stop_timeout = 1
        await ensure_topics(broker.bootstrap, {TOPIC: 4})
        await relay.producer.start()
        stopping = asyncio.Event()
        running = asyncio.create_task(relay.run(stopping))
        try:
            await wait_for_async(lambda: relay.recorded == published, timeout=30)
            waited = caplog.text.count(WAITS)
            broker.stop()  # no ack can come any more
            last = await asyncio.to_thread(write_tallies, app, 20, prefix="later")
            # It waits for acks with its pipeline full (or, wrongly, records what was not acked).
            await wait_for_async(
                lambda: caplog.text.count(WAITS) > waited or (relay.recorded or 0) > published,
                timeout=60,
            )
            stopping.set()
            await asyncio.wait_for(running, timeout=30)  # it stops with the broker away
        finally:
            stopping.set()
            await stop_producer(relay.producer, timeout=1)  # gives up what is unsent
        assert relay.position() == published, "recorded what the broker never acknowledged"
        assert recorded == sorted(set(recorded)), "positions recorded out of order"

        broker.start()  # it holds all it acknowledged (and perhaps some it could not)
        await read_topic(broker.bootstrap, TOPIC, until=every_position(published))
        # Restarted, the relay publishes the rest from the position it recorded.
        relay = tallies_relay(app, settings)
        await relay.producer.start()
        try:
            assert await relay.catch_up() == last
        finally:
            await stop_producer(relay.producer)
        records = await read_topic(broker.bootstrap, TOPIC, until=every_position(last))
        assert_complete_and_in_order(envelopes_of(records), last)
        app.close()
    finally:
        broker.stop()


def full_log(relay: processes.Process) -> str:
    return relay.log_path.read_text(errors="replace")


def start_relay(env: dict[str, str], log_dir: Path, name: str) -> processes.Process:
    argv = python_module("tests.kernel_example.relay")
    return processes.Process(name, argv, {**env, "PYTHONPATH": str(PROJECT)}, log_dir)


def test_relay_killed_and_restarted_mid_stream_loses_nothing(kafka, store, tmp_path: Path):
    """Relays killed one after another while tallies are written, until one has been
    killed mid-stream (its successor starts after a position it recorded, with more
    written after): every event is published, in order."""
    env = {
        **store.env("tallies"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "RELAY_BATCH_SIZE": "7",
        "RELAY_POLL_INTERVAL": "0.01",
    }
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    stop_writing = threading.Event()
    rounds_written = 0

    def write_continuously() -> None:  # however fast the relays start, it is still writing
        nonlocal rounds_written
        while not stop_writing.is_set():
            write_tallies(app, 10, rounds=3, close_every=2, prefix=f"tally-{rounds_written}")
            rounds_written += 1
            stop_writing.wait(0.05)  # a steady stream, not as many as SQLite can take

    def resumed_from() -> list[int]:
        return [
            int(match)
            for log in tmp_path.glob("tallies-relay*.log")
            for match in re.findall(r"starts after position (\d+)", log.read_text())
        ]

    writer = threading.Thread(target=write_continuously)
    writer.start()
    relay = start_relay(env, tmp_path, "tallies-relay")
    kills = 0
    try:
        while kills < 4 or (not any(resumed_from()) and kills < 12):
            deadline = time.monotonic() + 30
            while relay.alive() and "starts after position" not in relay.log():
                assert time.monotonic() < deadline, relay.log()
                time.sleep(0.02)
            time.sleep(0.05 * (kills % 4))  # let it get a little further each round
            relay.kill()
            kills += 1
            relay = start_relay(env, tmp_path, f"tallies-relay-{kills}")
        written_before_the_end = rounds_written
        wait_for(lambda: rounds_written > written_before_the_end, timeout=60)
        stop_writing.set()
        writer.join(timeout=120)
        assert not writer.is_alive()
        last = app.recorder.max_notification_id() or 0
        records = asyncio.run(read_topic(kafka, TOPIC, until=every_position(last), timeout=60))
    finally:
        stop_writing.set()
        relay.stop()
        writer.join(timeout=120)
        app.close()
    envelopes = envelopes_of(records)
    assert_complete_and_in_order(envelopes, last)
    assert all(json.loads(r.value)["subject"] == r.key.decode() for r in records)
    assert any(0 < position < last for position in resumed_from()), (
        f"no relay was killed mid-stream in {kills} kills: {resumed_from()} of {last}"
    )


def test_relay_killed_while_its_batches_await_acks_loses_nothing(store, tmp_path: Path):
    """Killed with batches sent and not acknowledged (the broker is away), the relay has
    recorded none of them: restarted, it sends them again."""
    broker = KafkaBroker(tmp_path / "kafka").start()  # stopped by PID, then started again
    env = {
        **store.env("tallies"),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "RELAY_BATCH_SIZE": "5",
        "RELAY_BATCHES_IN_FLIGHT": "2",
        "RELAY_ACK_WARNING_AFTER": "0.2",
        "RELAY_POLL_INTERVAL": "0.01",
    }
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=broker.bootstrap))
    tracked = f"relay:{TOPIC}"
    relay = start_relay(env, tmp_path, "tallies-relay")
    try:
        published = write_tallies(app, 10)
        wait_for(
            lambda: app.recorder.max_tracking_id(tracked) == published,
            timeout=30,
            message=relay.log(),
        )
        waited = full_log(relay).count(WAITS)
        broker.stop()
        last = write_tallies(app, 20, prefix="later")
        # It waits for acks with its pipeline full (or, wrongly, records what was not acked).
        wait_for(
            lambda: (
                full_log(relay).count(WAITS) > waited
                or (app.recorder.max_tracking_id(tracked) or 0) > published
            ),
            timeout=60,
            message=relay.log(),
        )
        relay.kill()
        assert app.recorder.max_tracking_id(tracked) == published, relay.log()
        broker.start()
        relay = start_relay(env, tmp_path, "tallies-relay-restarted")
        records = asyncio.run(
            read_topic(broker.bootstrap, TOPIC, until=every_position(last), timeout=60)
        )
    finally:
        relay.stop()
        broker.stop()
        app.close()
    assert_complete_and_in_order(envelopes_of(records), last)


# The relay wakes on its store's commits (docs/adr/0021, 0022). Its polls are set to 30 s
# here, so an event published within the 10 s deadline was published because of a wake-up.
WAKING = re.compile(
    r"listens for commits on channel|checks the store for commits|watches the store's files"
)
NO_POLL = {"RELAY_POLL_INTERVAL": "30", "RELAY_WATCHED_POLL_INTERVAL": "30"}
LISTENING = "listens for commits on channel"
NOT_LISTENING = "no connection listening on channel"


def relay_env(kafka: str, store: Store, **settings: str) -> dict[str, str]:
    return {**store.env("tallies"), "KAFKA_BOOTSTRAP_SERVERS": kafka, **settings}


def start_tallies_one_at_a_time(app: TalliesApplication, kafka: str, count: int) -> None:
    """Each tally's start must reach the broker before the next one's, within 10 s."""
    for _ in range(count):
        last = app.start_tally(f"tally-{uuid.uuid4().hex[:8]}").position
        asyncio.run(read_topic(kafka, TOPIC, until=every_position(last), timeout=10))


def on_postgres(sql: str, **params: Any) -> list[Any]:
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sqlalchemy.text(sql), params))
    finally:
        engine.dispose()


def listener_pids(store: Store) -> list[int]:
    """The backends of the relay's listening connection (by its application_name)."""
    rows = on_postgres(
        "SELECT pid FROM pg_stat_activity WHERE application_name = :name",
        name=f"relay:{TOPIC} {store.schema}",
    )
    return [row.pid for row in rows]


def kill_listener(store: Store) -> int:
    [pid] = listener_pids(store)
    on_postgres("SELECT pg_terminate_backend(:pid)", pid=pid)
    return pid


def test_relay_publishes_a_commit_long_before_its_next_poll(kafka, store, tmp_path: Path):
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    relay = start_relay(relay_env(kafka, store, **NO_POLL), tmp_path, "relay")
    try:
        wait_for(lambda: WAKING.search(relay.log()), timeout=30, message=relay.log())
        start_tallies_one_at_a_time(app, kafka, 3)
    finally:
        relay.stop()
        app.close()
    assert relay.popen.returncode == 0, relay.log()


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_relay_listens_again_after_its_connection_is_killed(kafka, store, tmp_path: Path):
    env = relay_env(kafka, store, **NO_POLL, RELAY_LISTEN_RETRY_INTERVAL="0.2")
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    relay = start_relay(env, tmp_path, "relay")
    try:
        wait_for(lambda: LISTENING in relay.log(), timeout=30, message=relay.log())
        for outage in (1, 2):
            killed = kill_listener(store)
            wait_for(
                lambda n=1 + outage: full_log(relay).count(LISTENING) == n, message=relay.log()
            )
            assert full_log(relay).count(NOT_LISTENING) == outage, "each outage is logged once"
            assert killed not in listener_pids(store)
            start_tallies_one_at_a_time(app, kafka, 3)
    finally:
        relay.stop()
        app.close()
    assert relay.popen.returncode == 0, relay.log()


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_relay_polls_while_its_listening_connection_is_down(kafka, store, tmp_path: Path):
    env = relay_env(kafka, store, RELAY_POLL_INTERVAL="0.2", RELAY_LISTEN_RETRY_INTERVAL="600")
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    relay = start_relay(env, tmp_path, "relay")
    try:
        wait_for(lambda: LISTENING in relay.log(), timeout=30, message=relay.log())
        kill_listener(store)
        wait_for(lambda: NOT_LISTENING in relay.log(), timeout=10, message=relay.log())
        last = write_tallies(app, 3)
        asyncio.run(read_topic(kafka, TOPIC, until=every_position(last), timeout=20))
        assert full_log(relay).count(LISTENING) == 1, "published by the poll, not a new listener"
    finally:
        relay.stop()  # while the listener waits out its 600 s: it must not hold the relay up
        app.close()
    assert relay.popen.returncode == 0, relay.log()


async def test_an_unreachable_server_is_logged_once_however_many_attempts_fail(caplog):
    attempts = 0

    class CountingListener(PostgresListener):
        async def listen(self, changed: asyncio.Event) -> None:
            nonlocal attempts
            attempts += 1
            await super().listen(changed)

    nobody_listens = {"host": "127.0.0.1", "port": free_port(), "dbname": "test"}
    listener = CountingListener(
        nobody_listens,
        channel="tallies_events",
        application_name="relay:tallies",
        retry_interval=0.01,
        name="relay:tallies",
    )
    task = asyncio.create_task(listener(asyncio.Event()))
    try:
        await wait_for_async(lambda: attempts >= 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    warnings = [
        r.getMessage().split(" (")[0]
        for r in caplog.records
        if r.name == "kernel.wakeup" and r.levelname == "WARNING"
    ]
    assert warnings == ["relay:tallies: no connection listening on channel tallies_events"]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_an_idle_sqlite_relay_is_woken_by_a_write_to_its_files(kafka, store, tmp_path: Path):
    """inotify on the store's files (docs/adr/0022): with every poll and the data_version
    check 30 s away, only the watch can publish within the 10 s deadline."""
    env = relay_env(kafka, store, **NO_POLL, RELAY_SQLITE_CHECK_INTERVAL="30")
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=kafka))
    relay = start_relay(env, tmp_path, "relay")
    try:
        wait_for(lambda: "watches the store's files" in relay.log(), message=relay.log())
        start_tallies_one_at_a_time(app, kafka, 3)
    finally:
        relay.stop()
        app.close()
    assert relay.popen.returncode == 0, relay.log()


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_the_sqlite_file_watch_announces_commits_while_active(store):
    app = open_tallies(relay_settings(store))
    watch = commit_watch(
        app.recorder, "relay:test", relay_settings(store, relay_sqlite_check_interval=30)
    )
    assert watch is not None and not is_active(watch)
    changed = asyncio.Event()
    task = asyncio.create_task(watch(changed))
    try:
        await wait_for_async(lambda: is_active(watch), message="the watch never started")
        changed.clear()
        await asyncio.to_thread(app.start_tally, "one")  # another connection commits
        await wait_for_async(changed.is_set, message="the commit was not announced")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        app.close()
    await wait_for_async(lambda: not is_active(watch), message="the watch did not stop")


class FakeWatch:
    def __init__(self) -> None:
        self.active = False

    async def __call__(self, changed: asyncio.Event) -> None:
        await asyncio.Event().wait()


async def test_the_relay_polls_rarely_while_its_watch_announces_commits(store):
    settings = relay_settings(
        store, relay_poll_interval=0.05, relay_watched_poll_interval=7, relay_wake_on_commit=False
    )
    app = open_tallies(settings)
    try:
        relay = tallies_relay(app, settings)
        assert relay.current_poll_interval() == 0.05  # no watch
        relay.watch_commits = watch = FakeWatch()
        assert relay.current_poll_interval() == 0.05  # a watch not announcing (yet)
        watch.active = True
        assert relay.current_poll_interval() == 7
    finally:
        app.close()


async def test_the_relay_announces_its_topic_once_a_batch_is_acknowledged(
    kafka, store, tmp_path: Path
):
    settings = relay_settings(
        store, kafka_bootstrap_servers=kafka, kafka_fetch_wakeup_dir=str(tmp_path / "wakeups")
    )
    app = open_tallies(settings)
    relay = tallies_relay(app, settings)
    announced = fetch_wakeups(settings).directory
    assert announced is not None and announced.parent == tmp_path / "wakeups"
    await ensure_topics(kafka, {TOPIC: 4})
    await relay.producer.start()
    try:
        assert await relay.publish_next_batch(0) == (0, 0)
        assert not (announced / TOPIC).exists(), "nothing published, nothing announced"
        last = write_tallies(app, 2)
        assert await relay.publish_next_batch(0) == (last, last)
        assert (announced / TOPIC).exists()
    finally:
        await stop_producer(relay.producer)
        app.close()
