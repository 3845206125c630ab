"""Health and metrics of the processes that serve no HTTP API of their own: a relay and a
Faust worker, as real processes on a real broker, on the kernel's tallies domain.

- a relay reports what it published and its lag on /metrics; with its broker gone it
  turns unready (still live), and ready again once the broker is back;
- a worker whose consumer task dies turns unready at once, then not live;
- a worker that stops fetching a partition (stalled) exits, and started again it handles
  what waited there;
- the metrics of the kernel's worker loop (consumer lag per partition) have their labels.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from devstack.processes import python_module
from devstack.servers import KafkaBroker, free_port
from kernel.kafka import ensure_topics
from tests import processes
from tests.integration.test_relay import relay_settings, write_tallies
from tests.kernel_example.contracts import TOPIC, registered
from tests.kernel_example.relay import open_tallies
from tests.metrics_scrape import scrape, value
from tests.stores import Store
from tests.support import wait_for

PROJECT = Path(__file__).resolve().parents[2]
WORKER_APP = "tests.kernel_example.worker:app"
FAST_HEALTH = {
    "HEALTH_CHECK_INTERVAL": "0.2",
    "HEALTH_CHECK_TIMEOUT": "1.0",
    "HEALTH_HEARTBEAT_INTERVAL": "0.1",
}


def status(url: str, path: str) -> int | None:
    try:
        return httpx.get(f"{url}{path}", timeout=5).status_code
    except httpx.TransportError:
        return None


@pytest.fixture(autouse=True)
def tally_contracts() -> Iterator[None]:
    with registered():
        yield


def test_a_relay_publishes_reports_its_lag_and_turns_unready_while_its_broker_is_gone(
    tmp_path: Path,
):
    broker = KafkaBroker(tmp_path / "kafka").start()
    store = Store(f"sqlite:///{tmp_path}/{{service}}.db")
    app = open_tallies(relay_settings(store, kafka_bootstrap_servers=broker.bootstrap))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **store.env("tallies"),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "RELAY_POLL_INTERVAL": "0.01",
        "HEALTH_PORT": str(port),
        **FAST_HEALTH,
        "PYTHONPATH": str(PROJECT),
    }
    relay = processes.Process("relay", python_module("tests.kernel_example.relay"), env, tmp_path)
    try:
        last = write_tallies(app, 10)
        wait_for(lambda: status(url, "/health/ready") == 200, timeout=30, message=relay.log())
        published = "cqrs_relay_published_events_total"
        wait_for(lambda: value(url, published, topic=TOPIC) == last, timeout=30)
        wait_for(lambda: value(url, "cqrs_relay_lag_events", topic=TOPIC) == 0, timeout=10)
        assert value(url, "cqrs_relay_leader", topic=TOPIC) == 1
        assert value(url, "cqrs_ready") == 1

        broker.stop()
        wait_for(lambda: status(url, "/health/ready") == 503, timeout=20, message=relay.log())
        problems = httpx.get(f"{url}/health/ready").json()["problems"]
        assert "broker" in problems, problems
        assert status(url, "/health/live") == 200  # nothing to restart: the broker is away
        assert value(url, "cqrs_ready") == 0
        # What is committed meanwhile is the relay's lag, in events and in seconds.
        behind = write_tallies(app, 3, prefix="while-away") - last
        wait_for(lambda: value(url, "cqrs_relay_lag_events", topic=TOPIC) == behind, timeout=10)
        assert (value(url, "cqrs_relay_lag_seconds", topic=TOPIC) or 0) > 0

        broker.start()  # the same port and data
        wait_for(lambda: status(url, "/health/ready") == 200, timeout=60, message=relay.log())
        wait_for(lambda: value(url, published, topic=TOPIC) == last + behind, timeout=30)
        wait_for(lambda: value(url, "cqrs_relay_lag_events", topic=TOPIC) == 0, timeout=10)
        assert value(url, "cqrs_relay_lag_seconds", topic=TOPIC) == 0
    finally:
        relay.stop()
        app.close()
        broker.stop()


async def _produce(bootstrap: str, *values: bytes, partition: int | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for number, data in enumerate(values):
            key = f"k{number}".encode()
            await producer.send_and_wait(TOPIC, data, key=key, partition=partition)
    finally:
        await producer.stop()


def consumer_lags(url: str) -> dict[str, float]:
    """The tallies worker's lag per partition, from its /metrics."""
    return {
        dict(labels)["partition"]: sample
        for (name, labels), sample in scrape(url).items()
        if name == "cqrs_consumer_lag_messages"
        and dict(labels).get("group") == "tallies-worker"
        and dict(labels).get("topic") == TOPIC
    }


def tallies_worker_env(kafka: str, port: int, **health: str) -> dict[str, str]:
    """The tallies worker's settings: the topic's 2 partitions, fast health checks."""
    asyncio.run(ensure_topics(kafka, {TOPIC: 2}))
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_TOPIC_PARTITIONS": "2",
        "HEALTH_PORT": str(port),
        **FAST_HEALTH,
        **health,
        "PYTHONPATH": str(PROJECT),
    }


def test_a_worker_whose_consumer_task_dies_turns_unready_then_not_live(kafka, tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = tallies_worker_env(
        kafka, port, HEALTH_CONSUMER_DEAD_AFTER="3", HEALTH_CONSUMER_STABLE_AFTER="60"
    )
    worker = processes.faust_worker("tallies-worker", WORKER_APP, env, tmp_path)
    try:
        wait_for(lambda: status(url, "/health/ready") == 200, timeout=60, message=worker.log())
        asyncio.run(_produce(kafka, *[b"fine"] * 6))

        def lags() -> dict[str, float]:
            return consumer_lags(url)

        wait_for(lambda: set(lags()) == {"0", "1"} and set(lags().values()) == {0}, timeout=30)
        assert status(url, "/health/live") == 200

        asyncio.run(_produce(kafka, b"die"))
        wait_for(lambda: status(url, "/health/ready") == 503, timeout=20, message=worker.log())
        problems = httpx.get(f"{url}/health/ready").json()["problems"]
        assert "ConsumerBug" in problems["consumer tallies-worker.count"], problems
        assert status(url, "/health/live") == 200  # unready at once, not yet dead
        wait_for(lambda: status(url, "/health/live") == 503, timeout=20, message=worker.log())
        problems = httpx.get(f"{url}/health/live").json()["problems"]
        assert "down for" in problems["consumer tallies-worker.count"], problems
    finally:
        worker.stop()


def test_a_worker_whose_partition_stalls_exits_and_restarted_handles_what_waited(
    tmp_path: Path,
):
    """The partition's fetching is paused (Faust's own pause, as a consumer that silently
    stops fetching would leave it): the lag of the last fetch says 0, the broker's end
    says 3; nothing is handled for HEALTH_STALL_AFTER seconds, so the worker exits."""
    broker = KafkaBroker(tmp_path / "kafka").start()  # a group and topic of its own
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = tallies_worker_env(broker.bootstrap, port, HEALTH_STALL_AFTER="3")
        stalling = {**env, "TALLIES_STALL": "1"}
        first = processes.faust_worker("tallies-worker", WORKER_APP, stalling, tmp_path)
        try:
            wait_for(lambda: status(url, "/health/ready") == 200, timeout=60, message=first.log())
            asyncio.run(_produce(broker.bootstrap, b"fine", b"stall", partition=0))
            wait_for(lambda: consumer_lags(url).get("0") == 0, timeout=30, message=first.log())
            asyncio.run(_produce(broker.bootstrap, b"fine", b"fine", b"fine", partition=0))
            wait_for(lambda: not first.alive(), timeout=30, message=first.log())
        finally:
            first.stop()
        assert first.popen.returncode != 0
        assert "stalled: 3 messages behind the broker's end" in first.log(), first.log()

        again = processes.faust_worker("tallies-worker", WORKER_APP, env, tmp_path)
        try:
            wait_for(lambda: status(url, "/health/ready") == 200, timeout=60, message=again.log())
            wait_for(lambda: consumer_lags(url).get("0") == 0, timeout=30, message=again.log())
            assert again.alive() and status(url, "/health/live") == 200
        finally:
            again.stop()
    finally:
        broker.stop()
