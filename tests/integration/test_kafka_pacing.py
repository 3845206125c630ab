"""An idle consumer on the local broker does not spin, and still gets what arrives (ADR 19).

noida-db answers an empty fetch at once; without `pace_empty_fetches` an idle aiokafka
consumer sends thousands of fetches a second (about a core). These tests count the
fetches of an idle consumer on a real broker, and check a message sent to it is
still read at once and that it stops cleanly (a pause is cancelled quietly).
"""

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.consumer.fetcher import Fetcher

from write_side.kernel.kafka import EMPTY_FETCH_INTERVAL, ensure_topics, pace_empty_fetches

IDLE_SECONDS = 1.0


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Pacing applied for this test only; the times its fetches were sent."""
    monkeypatch.setattr(Fetcher, "_proc_fetch_request", Fetcher._proc_fetch_request)
    pace_empty_fetches()
    paced = Fetcher._proc_fetch_request
    sent: list[float] = []

    async def counted(self: Fetcher, *args: Any) -> bool:
        sent.append(time.monotonic())
        result: bool = await paced(self, *args)
        return result

    monkeypatch.setattr(Fetcher, "_proc_fetch_request", counted)
    yield sent


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
