"""Degraded, not broken (issue 17, item 3), on a saga worker: while its event store (a
PostgreSQL cluster of the test's own, stopped and started by PID) is away, the worker
waits (`kernel.streams.retry_until_done`: the batch in hand is retried, not acknowledged,
not dead-lettered) and, once the store is back, applies every message that arrived
meanwhile exactly once.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from contracts import consumers, orders
from kernel.kafka import ensure_topics
from kernel.messaging import dead_letter_topic
from tests import postgres_cluster, processes
from tests.integration.kafka_reading import read_all
from tests.postgres_cluster import PostgresCluster
from tests.reference_saga.integration.test_consumers_accounting_reactions import order_created
from tests.support import wait_for_async
from write_side.consumers import relay as consumers_relay
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.bootstrap import build_application
from write_side.consumers.settings import ConsumersSettings

PARTITIONS = 4
EVENT_STORE_TIMEOUT = 1.0
"""Seconds a batch's attempt waits for the store before it fails (then it is retried)."""


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    yield from postgres_cluster.private_cluster()


def verified(app: ConsumersApplication) -> list[str]:
    """The order ids of every ConsumerVerified the consumers service stored, repeats kept."""
    events = [
        consumers_relay.to_contract(app.mapper.to_domain_event(notification))
        for notification in app.recorder.select_notifications(1, 100_000)
    ]
    return [e.order_id for e in events if isinstance(e, consumers.ConsumerVerified)]


async def test_a_saga_worker_waits_out_its_postgresql_restart_and_applies_every_message_once(
    kafka: str, postgres: PostgresCluster, tmp_path: Path
) -> None:
    postgres.start()
    settings = ConsumersSettings(consumers_database_url=postgres.url)
    app = build_application(settings)
    app.register_consumer("cust-1", "Ann")
    await ensure_topics(
        kafka, {orders.TOPIC: PARTITIONS, dead_letter_topic(orders.TOPIC): PARTITIONS}
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "CONSUMERS_DATABASE_URL": postgres.url,
        "EVENT_STORE_TIMEOUT": str(EVENT_STORE_TIMEOUT),
    }
    worker = processes.faust_worker(
        "consumers-saga", "write_side.consumers.saga:app", env, tmp_path
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=True)
    await producer.start()
    sent: list[str] = []

    async def send(count: int) -> None:
        for number in range(count):
            order_id = str(uuid.uuid4())
            await producer.send_and_wait(
                orders.TOPIC,
                order_created(order_id).to_bytes(),
                key=order_id.encode(),
                partition=number % PARTITIONS,
            )
            sent.append(order_id)

    async def all_verified() -> bool:
        return len(verified(app)) >= len(sent)

    try:
        await send(8)
        await wait_for_async(
            all_verified, timeout=60, interval=0.2, message=f"verified\n{processes.logs(worker)}"
        )

        postgres.stop()  # a fast shutdown: the worker's connections are cut
        await send(2 * PARTITIONS)  # on every partition while the store is away
        # Until a batch has met the outage (retry_until_done logs each retry; without it
        # the batch's error crashes the worker's agent, and what it held is never applied).
        await wait_for_async(
            lambda: any(
                word in worker.log_path.read_text(errors="replace")
                for word in ("retrying", "Traceback")
            ),
            timeout=30,
            interval=0.1,
            message=f"the worker meeting its store away\n{processes.logs(worker)}",
        )
        await send(2 * PARTITIONS)  # more, while its batch waits

        postgres.start()
        await send(2 * PARTITIONS)  # and after the store is back
        await wait_for_async(
            all_verified,
            timeout=60,
            interval=0.2,
            ignore=(Exception,),  # the test's own pool meeting the restart
            message=f"every order verified after the restart\n{processes.logs(worker)}",
        )
        assert worker.alive(), worker.log()
    finally:
        await producer.stop()
        worker.stop()
    try:
        assert sorted(verified(app)) == sorted(sent)  # none lost, none twice
    finally:
        app.close()
    assert await read_all(kafka, dead_letter_topic(orders.TOPIC), timeout=10) == []
