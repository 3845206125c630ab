"""A saga worker process stopped in the middle of a batch: nothing lost, nothing twice.

The consumers saga worker runs as deployed (a Faust worker on a real broker, its SQLite
store). The test holds the store's write lock, so the worker's first batch cannot
commit: it is surely in the middle of a batch when it is told to stop (SIGTERM). The
lock is let go at once, so the batch may commit while the worker shuts down, after its
messages were taken and before they are acknowledged. Started again, the worker
verifies every order exactly once.
"""

import signal
import sqlite3
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from contracts import consumers, orders
from kernel.kafka import ensure_topics
from kernel.messaging import dead_letter_topic
from tests import processes
from tests.integration.kafka_reading import read_all
from tests.reference_saga.integration.test_consumers_accounting_reactions import order_created
from tests.support import wait_for
from write_side.consumers import relay as consumers_relay
from write_side.consumers.bootstrap import build_application
from write_side.consumers.settings import ConsumersSettings

ORDERS = 400
PARTITIONS = 4


async def test_a_saga_worker_stopped_mid_batch_loses_nothing_and_applies_nothing_twice(
    kafka: str, tmp_path: Path
) -> None:
    database = tmp_path / "consumers.db"
    settings = ConsumersSettings(consumers_database_url=f"sqlite:///{database}")
    app = build_application(settings)
    app.register_consumer("cust-1", "Ann")
    await ensure_topics(
        kafka, {orders.TOPIC: PARTITIONS, dead_letter_topic(orders.TOPIC): PARTITIONS}
    )
    order_ids = [str(uuid.uuid4()) for _ in range(ORDERS)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=True)
    await producer.start()
    try:
        for order_id in order_ids:
            envelope = order_created(order_id)
            await producer.send(
                orders.TOPIC,
                envelope.to_bytes(),
                key=envelope.subject.encode(),
                headers=envelope.kafka_headers(),
            )
        await producer.flush()
    finally:
        await producer.stop()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "CONSUMERS_DATABASE_URL": settings.consumers_database_url,
    }

    def verified() -> list[str]:
        events = [
            consumers_relay.to_contract(app.mapper.to_domain_event(notification))
            for notification in app.recorder.select_notifications(1, 10 * ORDERS)
        ]
        return [e.order_id for e in events if isinstance(e, consumers.ConsumerVerified)]

    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the store's write lock: no batch can commit
    worker = processes.faust_worker(
        "consumers-saga", "write_side.consumers.saga:app", env, tmp_path
    )
    try:
        wait_for(
            lambda: "database is locked" in worker.log(),
            timeout=60,
            message=f"the worker never tried to commit a batch\n{processes.logs(worker)}",
        )
        assert verified() == []  # mid-batch: taken, not stored
        worker.popen.send_signal(signal.SIGTERM)  # by its PID
        lock.execute("ROLLBACK")  # the batch may now commit while the worker stops
        worker.popen.wait(timeout=60)
        assert len(verified()) < ORDERS, "the first worker finished: nothing was stopped"

        restarted = processes.faust_worker(
            "consumers-saga-2", "write_side.consumers.saga:app", env, tmp_path
        )
        try:
            wait_for(
                lambda: len(verified()) >= ORDERS,
                timeout=120,
                message=f"not every order was verified\n{processes.logs(restarted)}",
            )
        finally:
            restarted.stop()
    finally:
        worker.stop()
        lock.close()
        app.close()

    assert sorted(verified()) == sorted(order_ids)  # each once: none lost, none twice
    assert await read_all(kafka, dead_letter_topic(orders.TOPIC), timeout=10) == []
