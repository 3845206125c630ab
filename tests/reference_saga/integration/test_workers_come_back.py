"""Workers come back after ``kill -9``: static group membership (docs/adr/0031).

A worker killed with SIGKILL says nothing to its consumer group. Restarted, it rejoins
under the same group instance id (`kernel.group_membership`) and gets its partitions back
at once. With dynamic membership the local broker would never give them to it (it never
evicts the dead member: the restarted one waits in rebalances for ever), and Kafka only
after the session timeout. Each test kills its worker while messages still arrive,
restarts it, and wants it to handle new messages on every partition within as long as its
first start took to handle its first message plus RECOVERY_DEADLINE (short, so that
without static membership the test fails quickly; the start-up is the machine's speed,
not the group's); then every message's effect is there exactly once (the inbox, the
version guard).
"""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from contracts import consumers, orders
from kernel.kafka import ensure_topics
from kernel.messaging import dead_letter_topic
from projections.orders import ORDERS as ORDERS_PROJECTION
from tests import processes
from tests.integration.kafka_reading import read_all
from tests.reference_saga.integration.test_consumers_accounting_reactions import order_created
from tests.reference_saga.integration.test_projection import Sequence
from tests.support import wait_for_async
from write_side.consumers import relay as consumers_relay
from write_side.consumers.bootstrap import build_application
from write_side.consumers.settings import ConsumersSettings

RECOVERY_DEADLINE = 15.0
"""Seconds a restarted worker has, beyond the time its first start took, to handle a
message sent after its restart on every partition."""
ORDERS_PER_SECOND = 80.0
MAX_ORDERS = 2000
PARTITIONS = 4


@dataclass(frozen=True)
class Sent:
    order_id: str
    partition: int
    at: float  # time.monotonic() once acknowledged


class Feed:
    """Sends orders' messages at a steady pace, in a task of its own, until stopped; order
    ``i`` goes to partition ``i % PARTITIONS``. ``sent`` holds the orders whose messages the
    broker has acknowledged. After the first order it waits for ``go`` (the worker is up:
    its start-up does not eat the stream)."""

    def __init__(self, bootstrap: str, messages_of: Callable[[str], list[tuple[str, bytes]]]):
        self.bootstrap = bootstrap
        self.messages_of = messages_of
        self.sent: list[Sent] = []
        self.task: asyncio.Task[None] | None = None
        self.go = asyncio.Event()
        self.stopping = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for number in range(MAX_ORDERS):
                if self.stopping.is_set():
                    return
                order_id, partition = str(uuid.uuid4()), number % PARTITIONS
                for topic, value in self.messages_of(order_id):
                    await producer.send_and_wait(
                        topic, value, key=order_id.encode(), partition=partition
                    )
                self.sent.append(Sent(order_id, partition, time.monotonic()))
                await self.go.wait()
                await asyncio.sleep(1 / ORDERS_PER_SECOND)
        finally:
            await producer.stop()

    def order_ids(self) -> list[str]:
        return [sent.order_id for sent in self.sent]

    def first_on_each_partition_after(self, moment: float) -> list[str] | None:
        """The first order sent after ``moment`` on each partition (None until there is one
        on every partition)."""
        first: dict[int, str] = {}
        for sent in self.sent:
            if sent.at > moment:
                first.setdefault(sent.partition, sent.order_id)
        return list(first.values()) if len(first) == PARTITIONS else None

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is not None:
            await self.task


async def kill_restart_and_time_the_recovery(
    feed: Feed,
    start_worker: Callable[[str], processes.Process],
    handled: Callable[[list[str]], Awaitable[int]],
    what: str,
) -> tuple[processes.Process, float]:
    """Start the worker and the feed; once the worker has handled some orders, kill it
    (SIGKILL) and start it again while the feed goes on; return the restarted worker and
    the seconds until it had handled an order sent after its restart on every partition.
    The feed is stopped a moment later."""
    worker = start_worker(what)
    started_at = time.monotonic()
    restarted: processes.Process | None = None
    try:
        feed.start()
        await wait_for_async(
            lambda: handled(feed.order_ids()[:1]),
            timeout=60,
            interval=0.1,
            message=f"the worker never handled an order\n{processes.logs(worker)}",
        )
        first_start = time.monotonic() - started_at
        feed.go.set()
        await wait_for_async(
            lambda: _at_least(handled(feed.order_ids()), 20), timeout=30, interval=0.1
        )
        worker.kill()
        restarted = start_worker(f"{what}-restarted")
        restarted_at = time.monotonic()

        async def on_every_partition() -> bool:
            firsts = feed.first_on_each_partition_after(restarted_at)
            return firsts is not None and await handled(firsts) == PARTITIONS

        deadline = first_start + RECOVERY_DEADLINE
        try:
            await wait_for_async(on_every_partition, timeout=deadline, interval=0.1)
        except TimeoutError:
            raise AssertionError(
                f"{what}: restarted after kill -9, it handled no message sent after its "
                f"restart on every partition within {deadline:.1f}s (its first start took "
                f"{first_start:.1f}s): it never got its partitions back\n"
                f"{processes.logs(worker, restarted)}"
            ) from None
        recovery = time.monotonic() - restarted_at
        assert not feed.task or not feed.task.done(), "the feed ended: nothing was mid-stream"
        print(
            f"\n{what}: restarted after kill -9 mid-stream ({len(feed.sent)} orders sent so "
            f"far), it handled new messages on all {PARTITIONS} partitions {recovery:.2f}s "
            f"after its restart (its first start: {first_start:.2f}s to its first message)"
        )
        await asyncio.sleep(1.0)  # messages still arriving after the recovery
        await feed.stop()
        return restarted, recovery
    except BaseException:
        if restarted is not None:
            restarted.stop()
        raise
    finally:
        worker.stop()
        if feed.task is not None and not feed.task.done():
            feed.task.cancel()
            with suppress(asyncio.CancelledError):
                await feed.task


async def test_a_saga_worker_killed_mid_stream_comes_back_and_applies_each_message_once(
    kafka: str, tmp_path: Path
) -> None:
    settings = ConsumersSettings(consumers_database_url=f"sqlite:///{tmp_path}/consumers.db")
    app = build_application(settings)
    app.register_consumer("cust-1", "Ann")
    await ensure_topics(
        kafka, {orders.TOPIC: PARTITIONS, dead_letter_topic(orders.TOPIC): PARTITIONS}
    )
    feed = Feed(kafka, lambda order_id: [(orders.TOPIC, order_created(order_id).to_bytes())])
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "CONSUMERS_DATABASE_URL": settings.consumers_database_url,
    }

    def verified() -> list[str]:
        events = [
            consumers_relay.to_contract(app.mapper.to_domain_event(notification))
            for notification in app.recorder.select_notifications(1, 10 * MAX_ORDERS)
        ]
        return [e.order_id for e in events if isinstance(e, consumers.ConsumerVerified)]

    async def handled(order_ids: list[str]) -> int:
        return len(set(order_ids) & set(verified()))

    def start_worker(name: str) -> processes.Process:
        return processes.faust_worker(name, "write_side.consumers.saga:app", env, tmp_path)

    try:
        restarted, _ = await kill_restart_and_time_the_recovery(
            feed, start_worker, handled, "consumers-saga"
        )
        try:
            await wait_for_async(
                lambda: len(verified()) >= len(feed.sent),
                timeout=60,
                interval=0.2,
                message=f"not every order was verified\n{processes.logs(restarted)}",
            )
        finally:
            restarted.stop()
        # each once: none lost, none twice
        assert sorted(verified()) == sorted(feed.order_ids())
    finally:
        app.close()
    assert await read_all(kafka, dead_letter_topic(orders.TOPIC), timeout=10) == []


async def test_the_projections_worker_killed_mid_stream_comes_back_with_every_document(
    kafka: str, mongo_url: str, mongo_database: str, tmp_path: Path
) -> None:
    await ensure_topics(
        kafka,
        {topic: PARTITIONS for topic in ORDERS_PROJECTION.topics}
        | {dead_letter_topic(topic): PARTITIONS for topic in ORDERS_PROJECTION.topics},
    )
    log = Sequence()

    def created_then_approved(order_id: str) -> list[tuple[str, bytes]]:
        approved = log.message(orders.OrderApproved(order_id=order_id), order_id, 2)
        return [(orders.TOPIC, m.value or b"") for m in (log.created(order_id), approved)]

    feed = Feed(kafka, created_then_approved)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": mongo_database,
        "PROJECTIONS_GROUP_ID": f"projections-{uuid.uuid4().hex[:8]}",
    }
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    documents = client[mongo_database]["orders"]

    async def handled(order_ids: list[str]) -> int:
        """Orders whose document is at its last version (approved)."""
        return await documents.count_documents({"_id": {"$in": order_ids}, "version": 2})

    def start_worker(name: str) -> processes.Process:
        return processes.faust_worker(name, "projections.worker:app", env, tmp_path)

    try:
        restarted, _ = await kill_restart_and_time_the_recovery(
            feed, start_worker, handled, "projections"
        )
        try:
            await wait_for_async(
                lambda: _at_least(handled(feed.order_ids()), len(feed.sent)),
                timeout=60,
                interval=0.2,
                message=f"not every order was projected\n{processes.logs(restarted)}",
            )
        finally:
            restarted.stop()
        projected = await documents.find({}).to_list()
    finally:
        await client.close()
    assert sorted(doc["_id"] for doc in projected) == sorted(feed.order_ids())  # none missing
    assert {(doc["status"], doc["version"]) for doc in projected} == {("APPROVED", 2)}
    assert all(doc["_applied"] == {f"orders/{doc['_id']}": 2} for doc in projected)
    assert await read_all(kafka, dead_letter_topic(orders.TOPIC), timeout=10) == []


async def _at_least(count: Awaitable[int], expected: int) -> bool:
    return await count >= expected
