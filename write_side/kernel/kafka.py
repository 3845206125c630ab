"""Small helpers around aiokafka shared by relays, workers and tests."""

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create the topics (name → partitions) that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=1)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created by another process in the meantime
    finally:
        await admin.close()


def reliable_producer(bootstrap: str) -> AIOKafkaProducer:
    """Idempotent producer that waits for all in-sync replicas: no loss, no broker-side dupes."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
    )


async def stop_producer(producer: AIOKafkaProducer, timeout: float = 5.0) -> None:
    """Stop a producer, giving up on unsent messages after ``timeout`` seconds.

    With the broker away, aiokafka would wait for ever. Unsent messages were never
    acknowledged, so whoever sent them has not recorded them as published.
    """
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except TimeoutError:
        log.warning("producer stopped with unacknowledged messages; they will be resent")
