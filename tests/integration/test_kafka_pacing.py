"""An idle consumer on the local broker does not spin, and still gets what arrives (ADR 19,
ADR 22).

noida-db answers an empty fetch at once; without `pace_empty_fetches` an idle aiokafka
consumer sends thousands of fetches a second (about a core). These tests count the
fetches of an idle consumer on a real broker, and check a message sent to it is
still read at once and that it stops cleanly (a pause is cancelled quietly). With
wakeups (`FetchWakeups`), the pause is long and a producer's announcement ends it.
"""

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.consumer.fetcher import Fetcher

from kernel import kafka
from kernel.kafka import (
    EMPTY_FETCH_INTERVAL,
    ensure_topics,
    fetch_wakeups,
    pace_empty_fetches,
)
from kernel.settings import KafkaSettings

IDLE_SECONDS = 1.0
LONG_PAUSE = 30.0
"""The pause with wakeups in these tests: what arrives within a 10 s deadline was woken."""


def count_fetches(monkeypatch: pytest.MonkeyPatch, *pacing: Any) -> list[float]:
    """Pacing (`pace_empty_fetches(*pacing)`) for this test only; the times its fetches
    were sent."""
    monkeypatch.setattr(Fetcher, "_proc_fetch_request", Fetcher._proc_fetch_request)
    monkeypatch.setattr(kafka, "_pacing", kafka._pacing)
    pace_empty_fetches(*pacing)
    paced = Fetcher._proc_fetch_request
    sent: list[float] = []

    async def counted(self: Fetcher, *args: Any) -> bool:
        sent.append(time.monotonic())
        result: bool = await paced(self, *args)
        return result

    monkeypatch.setattr(Fetcher, "_proc_fetch_request", counted)
    return sent


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    return count_fetches(monkeypatch)


def woken_pacing(bootstrap: str, folder: Path, pause: float) -> tuple[Any, ...]:
    settings = KafkaSettings(kafka_bootstrap_servers=bootstrap, kafka_fetch_wakeup_dir=str(folder))
    return EMPTY_FETCH_INTERVAL, fetch_wakeups(settings), pause


async def idle_consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    await ensure_topics(bootstrap, {topic: 4})
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"pacing-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # joined, assigned, fetching
    return consumer


async def test_an_idle_consumer_sends_a_fetch_per_interval_not_thousands(
    kafka_bootstrap: str, fetches: list[float]
):
    consumer = await idle_consumer(kafka_bootstrap, f"pacing-{uuid.uuid4().hex[:8]}")
    try:
        start = time.monotonic()
        while time.monotonic() - start < IDLE_SECONDS:
            assert await consumer.getmany(timeout_ms=200) == {}
        sent = [t for t in fetches if t >= start]
    finally:
        await consumer.stop()  # a pause in progress ends quietly
    # One broker, so one fetch at a time: at most one per interval (and a little slack).
    assert 0 < len(sent) <= 1.5 * IDLE_SECONDS / EMPTY_FETCH_INTERVAL


async def test_a_message_sent_to_an_idle_consumer_arrives_at_once(
    kafka_bootstrap: str, fetches: list[float]
):
    topic = f"pacing-{uuid.uuid4().hex[:8]}"
    consumer = await idle_consumer(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
        sent = time.monotonic()
        received = await consumer.getmany(timeout_ms=2000)
        waited = time.monotonic() - sent
    finally:
        await producer.stop()
        await consumer.stop()
    assert [r.value for records in received.values() for r in records] == [b"hello"]
    assert waited < 0.5


async def idle_for(consumer: AIOKafkaConsumer, seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        assert await consumer.getmany(timeout_ms=200) == {}
    return start


async def test_a_consumer_that_hears_wakeups_rests_and_an_announcement_wakes_it(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    pacing = woken_pacing(kafka_bootstrap, tmp_path, LONG_PAUSE)
    fetches = count_fetches(monkeypatch, *pacing)
    topic = f"pacing-{uuid.uuid4().hex[:8]}"
    consumer = await idle_consumer(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        start = await idle_for(consumer, IDLE_SECONDS)
        assert len([t for t in fetches if t >= start]) <= 1, "it did not rest"
        await producer.send_and_wait(topic, b"hello", key=b"k")
        pacing[1].announce(topic)
        received = await consumer.getmany(timeout_ms=10_000)
    finally:
        await producer.stop()
        await consumer.stop()  # a long pause in progress ends quietly
    assert [r.value for records in received.values() for r in records] == [b"hello"]


async def test_a_message_nobody_announces_still_arrives_after_the_pause(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    count_fetches(monkeypatch, *woken_pacing(kafka_bootstrap, tmp_path, 0.2))
    topic = f"pacing-{uuid.uuid4().hex[:8]}"
    consumer = await idle_consumer(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"unannounced", key=b"k")
        received = await consumer.getmany(timeout_ms=10_000)
    finally:
        await producer.stop()
        await consumer.stop()
    assert [r.value for records in received.values() for r in records] == [b"unannounced"]


def test_wakeups_are_per_broker_and_off_unless_a_folder_is_set(tmp_path: Path):
    assert fetch_wakeups(KafkaSettings()).directory is None
    fetch_wakeups(KafkaSettings()).announce("orders")  # off: nothing, no error
    one, other = (
        fetch_wakeups(
            KafkaSettings(kafka_bootstrap_servers=bootstrap, kafka_fetch_wakeup_dir=str(tmp_path))
        )
        for bootstrap in ("127.0.0.1:9092", "127.0.0.1:9093")
    )
    assert one.directory is not None and other.directory is not None
    assert one.directory != other.directory
    assert one.directory.parent == other.directory.parent == tmp_path
    one.announce("orders")
    assert (one.directory / "orders").exists() and not (other.directory / "orders").exists()
