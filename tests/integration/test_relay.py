"""The relay against a real broker, with the event store on SQLite and on PostgreSQL."""

import asyncio
import json
import re
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from contracts.envelope import Envelope
from devstack.servers import KafkaBroker, free_port
from tests import processes
from tests.integration.kafka_reading import read_topic
from tests.stores import POSTGRES_URL, Store, orders_settings
from tests.support import wait_for, wait_for_async
from write_side.kernel.kafka import ensure_topics, stop_producer
from write_side.kernel.metadata import MessageMetadata, caused_by
from write_side.kernel.wakeup import PostgresListener
from write_side.orders.bootstrap import build_application
from write_side.orders.relay import orders_relay as build_relay

ITEMS = [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}]
ADDRESS = {"street": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


def place_orders(app, count: int, cancel_every: int = 3) -> int:  # type: ignore[no-untyped-def]
    for i in range(count):
        saved = app.place_order(f"customer-{i % 5}", "restaurant-1", ADDRESS, ITEMS)
        if i % cancel_every == 0:
            app.approve_order(saved.order_id)
            app.cancel_order(saved.order_id, "changed my mind")
    return int(app.recorder.max_notification_id())


def envelopes_of(records) -> list[Envelope]:  # type: ignore[no-untyped-def]
    return [Envelope.from_bytes(r.value) for r in records]


def every_position(last: int):  # type: ignore[no-untyped-def]
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
    settings = orders_settings(store, kafka_bootstrap_servers=kafka)
    app = build_application(settings)
    with caused_by(MessageMetadata(correlation_id="corr-1", causation_id="cause-1")):
        first = app.place_order("customer-1", "restaurant-1", ADDRESS, ITEMS)
    last = place_orders(app, 30)
    relay = build_relay(app, settings)
    await ensure_topics(kafka, {"orders": 4})
    await relay.producer.start()
    try:
        position, read = await relay.publish_next_batch(0)
    finally:
        await relay.producer.stop()
    assert (position, read) == (last, last), "one call publishes the whole batch"
    assert relay.position() == last

    records = await read_topic(kafka, "orders", until=every_position(last))
    envelopes = envelopes_of(records)
    assert_complete_and_in_order(envelopes, last)
    assert all(r.key == e.subject.encode() for r, e in zip(records, envelopes, strict=True))

    [record, v1_record] = [r for r, e in zip(records, envelopes, strict=True) if e.sequence == 1]
    headers = dict(record.headers)
    created = Envelope.from_bytes(record.value)
    assert created.type == "orders.OrderCreated.v2"
    assert created.subject == str(first.order_id)
    assert created.data["total_cents"] == 2500
    assert headers["ce_id"].decode() == created.id
    assert headers["ce_type"] == b"orders.OrderCreated.v2"
    assert headers["ce_source"] == b"orders"
    assert headers["ce_time"].decode() == created.time.isoformat()
    assert headers["content-type"] == b"application/cloudevents+json"
    assert headers["ce_correlationid"] == b"corr-1"
    assert headers["ce_causationid"] == b"cause-1"
    # The transition period (ORDERS_RELAY_ALSO_PUBLISH): the v1 copy follows, as one event.
    v1 = Envelope.from_bytes(v1_record.value)
    assert dict(v1_record.headers)["ce_type"] == b"orders.OrderCreated.v1"
    assert (v1.type, v1.id, v1.aggregateversion) == ("orders.OrderCreated.v1", created.id, 1)
    assert v1.data["delivery_address"] == "1 Main St, 12345 Springfield, US"
    assert sum(e.type == "orders.OrderCreated.v1" for e in envelopes) == 31
    app.close()


@pytest.mark.parametrize(
    ("also_publish", "created_types"),
    [
        (None, ["orders.OrderCreated.v2", "orders.OrderCreated.v1"]),  # the default
        (frozenset(), ["orders.OrderCreated.v2"]),  # after the transition
    ],
    ids=["transition", "after-transition"],
)
async def test_the_setting_decides_which_majors_the_relay_publishes(
    store, also_publish, created_types
):
    overrides = {} if also_publish is None else {"orders_relay_also_publish": also_publish}
    settings = orders_settings(store, **overrides)
    app = build_application(settings)
    saved = app.place_order("customer-1", "restaurant-1", ADDRESS, ITEMS)
    app.approve_order(saved.order_id)
    relay = build_relay(app, settings)  # the producer is not started: nothing is sent
    try:
        notifications = app.recorder.select_notifications(1, 10)
        published = [[e.type for e in relay.envelopes(n)] for n in notifications]
    finally:
        await stop_producer(relay.producer, timeout=1)
        app.close()

    assert published == [created_types, ["orders.OrderApproved.v1"]]


async def test_relay_keeps_its_position_when_the_broker_does_not_acknowledge(store, tmp_path):
    with KafkaBroker(tmp_path / "doomed-kafka") as broker:  # stopped by PID on the way out
        settings = orders_settings(store, kafka_bootstrap_servers=broker.bootstrap)
        app = build_application(settings)
        place_orders(app, 5)
        relay = build_relay(app, settings)
        relay.producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=1000,
        )
        await ensure_topics(broker.bootstrap, {"orders": 4})
        await relay.producer.start()
        broker.stop()  # the broker goes away: no send can be acknowledged
        try:
            with pytest.raises((KafkaError, TimeoutError)):
                await asyncio.wait_for(relay.publish_next_batch(0), timeout=3)
        finally:
            await stop_producer(relay.producer, timeout=1)
            app.close()
        assert relay.position() == 0


def test_relay_killed_and_restarted_mid_stream_loses_nothing(kafka, store, tmp_path: Path):
    env = {
        **store.env("orders"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "RELAY_BATCH_SIZE": "7",
        "RELAY_POLL_INTERVAL": "0.01",
    }
    app = build_application(orders_settings(store, kafka_bootstrap_servers=kafka))
    writer_done = threading.Event()

    def write_continuously() -> None:
        place_orders(app, 150, cancel_every=2)
        writer_done.set()

    writer = threading.Thread(target=write_continuously)
    writer.start()
    relay = processes.relay(env, tmp_path)
    kills = 0
    try:
        while kills < 4:
            deadline = time.monotonic() + 30
            while relay.alive() and not _has_published(relay, tmp_path):
                assert time.monotonic() < deadline, relay.log()
                time.sleep(0.02)
            time.sleep(0.05 * kills)  # let it get a little further each round
            relay.kill()
            kills += 1
            relay = processes.relay(env, tmp_path, name=f"orders-relay-{kills}")
        writer.join(timeout=120)
        assert writer_done.is_set()
        last = int(app.recorder.max_notification_id())
        records = asyncio.run(
            read_topic(
                kafka,
                "orders",
                until=lambda r: (
                    {Envelope.from_bytes(x.value).sequence for x in r} >= set(range(1, last + 1))
                ),
                timeout=60,
            )
        )
    finally:
        relay.stop()
        app.close()
    envelopes = envelopes_of(records)
    assert_complete_and_in_order(envelopes, last)
    assert all(json.loads(r.value)["subject"] == r.key.decode() for r in records)
    resumed_from = [
        int(match)
        for log in tmp_path.glob("orders-relay*.log")
        for match in re.findall(r"starts after position (\d+)", log.read_text())
    ]
    assert any(0 < position < last for position in resumed_from), (
        f"no relay was killed mid-stream: {resumed_from} of {last}"
    )


def _has_published(relay: processes.Process, log_dir: Path) -> bool:
    return "starts after position" in relay.log()


# The relay wakes on its store's commits (docs/adr/0020). Its poll is set to 30 s here, so
# an event published within the 10 s deadline was published because of a wake-up.
WAKING = re.compile(r"listens for commits on channel|checks the store for commits")
LISTENING = "listens for commits on channel"
NOT_LISTENING = "no connection listening on channel"


def relay_env(kafka: str, store: Store, **settings: str) -> dict[str, str]:
    return {**store.env("orders"), "KAFKA_BOOTSTRAP_SERVERS": kafka, **settings}


def place_one_order_at_a_time(app, kafka: str, count: int) -> None:  # type: ignore[no-untyped-def]
    """Each order must reach the broker before the next is placed, within 10 s."""
    for _ in range(count):
        last = place_orders(app, 1)
        asyncio.run(read_topic(kafka, "orders", until=every_position(last), timeout=10))


def full_log(relay: processes.Process) -> str:
    return relay.log_path.read_text(errors="replace")


def listener_pids(store: Store) -> list[int]:
    """The backends of the relay's listening connection (by its application_name)."""
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": f"relay:orders {store.schema}"},
            )
            return [row.pid for row in rows]
    finally:
        engine.dispose()


def kill_listener(store: Store) -> int:
    [pid] = listener_pids(store)
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        engine.dispose()
    return pid


def test_relay_publishes_a_commit_long_before_its_next_poll(kafka, store, tmp_path: Path):
    app = build_application(orders_settings(store, kafka_bootstrap_servers=kafka))
    relay = processes.relay(relay_env(kafka, store, RELAY_POLL_INTERVAL="30"), tmp_path)
    try:
        wait_for(lambda: WAKING.search(relay.log()), timeout=30, message=relay.log())
        place_one_order_at_a_time(app, kafka, 3)
    finally:
        relay.stop()
        app.close()
    assert relay.popen.returncode == 0, relay.log()


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_relay_listens_again_after_its_connection_is_killed(kafka, store, tmp_path: Path):
    env = relay_env(kafka, store, RELAY_POLL_INTERVAL="30", RELAY_LISTEN_RETRY_INTERVAL="0.2")
    app = build_application(orders_settings(store, kafka_bootstrap_servers=kafka))
    relay = processes.relay(env, tmp_path)
    try:
        wait_for(lambda: LISTENING in relay.log(), timeout=30, message=relay.log())
        for outage in (1, 2):
            killed = kill_listener(store)
            wait_for(
                lambda n=1 + outage: full_log(relay).count(LISTENING) == n, message=relay.log()
            )
            assert full_log(relay).count(NOT_LISTENING) == outage, "each outage is logged once"
            assert killed not in listener_pids(store)
            place_one_order_at_a_time(app, kafka, 3)
    finally:
        relay.stop()
        app.close()
    assert relay.popen.returncode == 0, relay.log()


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_relay_polls_while_its_listening_connection_is_down(kafka, store, tmp_path: Path):
    env = relay_env(kafka, store, RELAY_POLL_INTERVAL="0.2", RELAY_LISTEN_RETRY_INTERVAL="600")
    app = build_application(orders_settings(store, kafka_bootstrap_servers=kafka))
    relay = processes.relay(env, tmp_path)
    try:
        wait_for(lambda: LISTENING in relay.log(), timeout=30, message=relay.log())
        kill_listener(store)
        wait_for(lambda: NOT_LISTENING in relay.log(), timeout=10, message=relay.log())
        last = place_orders(app, 3)
        asyncio.run(read_topic(kafka, "orders", until=every_position(last), timeout=20))
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
        channel="orders_events",
        application_name="relay:orders",
        retry_interval=0.01,
        name="relay:orders",
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
        if r.name == "write_side.kernel.wakeup" and r.levelname == "WARNING"
    ]
    assert warnings == ["relay:orders: no connection listening on channel orders_events"]
