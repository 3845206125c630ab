"""Workers come back after ``kill -9``: static group membership (docs/adr/0031).

A worker killed with SIGKILL says nothing to its consumer group. Restarted, it rejoins
under the same group instance id (`kernel.group_membership`) and gets its partitions back
at once. With dynamic membership the local broker would never give them to it (it never
evicts the dead member: the restarted one waits in rebalances for ever), and Kafka only
after the session timeout. Each test kills its workers while messages still arrive (the
four saga workers at once, one per service; the projections worker), restarts them,
and wants each to handle new messages on every partition within as long as their first
start took to handle a first message plus RECOVERY_DEADLINE (short, so that without
static membership the test fails quickly; the start-up is the machine's speed, not the
group's); then every message's effect is there exactly once, in every service (the
inbox, the version guard).
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

from contracts import accounting, consumers, kitchen, orders
from contracts.base import ContractEvent
from kernel.application import ServiceApplication
from kernel.kafka import ensure_topics
from kernel.messaging import dead_letter_topic
from kernel.relay import ContractMapping
from projections.orders import ORDERS as ORDERS_PROJECTION
from tests import processes
from tests.integration.kafka_reading import read_all
from tests.reference_saga.examples import PLACE_ORDER
from tests.reference_saga.integration.test_consumers_accounting_reactions import (
    ITEMS,
    TOTAL,
    envelope_of,
    order_created,
)
from tests.reference_saga.integration.test_projection import Sequence as ProjectionLog
from tests.support import wait_for_async
from write_side.accounting import relay as accounting_relay
from write_side.accounting.bootstrap import build_application as build_accounting
from write_side.accounting.settings import AccountingSettings
from write_side.consumers import relay as consumers_relay
from write_side.consumers.bootstrap import build_application as build_consumers
from write_side.consumers.settings import ConsumersSettings
from write_side.kitchen import relay as kitchen_relay
from write_side.kitchen.bootstrap import build_application as build_kitchen
from write_side.kitchen.settings import KitchenSettings
from write_side.orders import relay as orders_relay
from write_side.orders.bootstrap import build_application as build_orders
from write_side.orders.settings import OrdersSettings

RECOVERY_DEADLINE = 15.0
"""Seconds the restarted workers have, beyond the time their first start took, to handle
a message sent after their restart on every partition."""
ORDERS_PER_SECOND = 80.0
MAX_ORDERS = 2000
PARTITIONS = 4
SAGA_TOPICS = (orders.TOPIC, consumers.TOPIC, kitchen.TOPIC, accounting.TOPIC)


@dataclass(frozen=True)
class Sent:
    order_id: str
    partition: int
    at: float  # time.monotonic() once acknowledged


class Feed:
    """Sends orders' messages at a steady pace, in a task of its own, until stopped; order
    ``i`` goes to partition ``i % PARTITIONS``. ``sent`` holds the orders whose messages the
    broker has acknowledged. After the first order it waits for ``go`` (the workers are
    up: their start-up does not eat the stream). ``new_order_id`` gives each order's id
    (by default a fresh UUID)."""

    def __init__(
        self,
        bootstrap: str,
        messages_of: Callable[[str], list[tuple[str, bytes]]],
        new_order_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ):
        self.bootstrap = bootstrap
        self.messages_of = messages_of
        self.new_order_id = new_order_id
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
                order_id, partition = self.new_order_id(), number % PARTITIONS
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
    start_workers: Callable[[str], list[processes.Process]],
    handled: Callable[[list[str]], Awaitable[int]],
    what: str,
) -> tuple[list[processes.Process], float]:
    """Start the workers and the feed; once they have handled some orders, kill them all
    (SIGKILL) and start them again while the feed goes on; return the restarted workers
    and the seconds until they had handled an order sent after their restart on every
    partition. ``handled(order_ids)``: how many of the orders every worker has handled
    (the least over the workers). The feed is stopped a moment later."""
    workers = start_workers(what)
    started_at = time.monotonic()
    restarted: list[processes.Process] = []
    try:
        feed.start()
        await wait_for_async(
            lambda: handled(feed.order_ids()[:1]),
            timeout=60,
            interval=0.1,
            message=f"the workers never handled an order\n{processes.logs(*workers)}",
        )
        first_start = time.monotonic() - started_at
        feed.go.set()
        await wait_for_async(
            lambda: _at_least(handled(feed.order_ids()), 20), timeout=30, interval=0.1
        )
        for worker in workers:
            worker.kill()
        restarted = start_workers(f"{what}-restarted")
        restarted_at = time.monotonic()

        async def on_every_partition() -> bool:
            firsts = feed.first_on_each_partition_after(restarted_at)
            return firsts is not None and await handled(firsts) == PARTITIONS

        deadline = first_start + RECOVERY_DEADLINE
        try:
            await wait_for_async(on_every_partition, timeout=deadline, interval=0.1)
        except TimeoutError:
            raise AssertionError(
                f"{what}: restarted after kill -9, they handled no message sent after "
                f"their restart on every partition within {deadline:.1f}s (their first "
                f"start took {first_start:.1f}s): they never got their partitions back\n"
                f"{processes.logs(*workers, *restarted)}"
            ) from None
        recovery = time.monotonic() - restarted_at
        assert not feed.task or not feed.task.done(), "the feed ended: nothing was mid-stream"
        print(
            f"\n{what}: restarted after kill -9 mid-stream ({len(feed.sent)} orders sent so "
            f"far), handled new messages on all {PARTITIONS} partitions {recovery:.2f}s "
            f"after the restart (the first start: {first_start:.2f}s to a first message)"
        )
        await asyncio.sleep(1.0)  # messages still arriving after the recovery
        await feed.stop()
        return restarted, recovery
    except BaseException:
        await stop_all(restarted)
        raise
    finally:
        await stop_all(workers)
        if feed.task is not None and not feed.task.done():
            feed.task.cancel()
            with suppress(asyncio.CancelledError):
                await feed.task


def published(app: ServiceApplication, to_contract: ContractMapping) -> list[ContractEvent]:
    """The contract events of everything ``app``'s service stored, in order."""
    events = (
        to_contract(app.mapper.to_domain_event(notification))
        for notification in app.recorder.select_notifications(1, 10 * MAX_ORDERS)
    )
    return [event for event in events if event is not None]


async def test_the_four_saga_workers_killed_mid_stream_come_back_and_apply_each_message_once(
    kafka: str, tmp_path: Path
) -> None:
    """Each order's messages reach every saga worker at once, each on the order's
    partition: OrderCreated (consumers verifies), ConsumerVerified (kitchen makes the
    ticket), TicketCreated (accounting authorizes), TicketRejected (orders rejects the
    order, which the test placed in the orders store first). All four are killed at
    once and restarted."""
    database = {service: f"sqlite:///{tmp_path}/{service}.db" for service in SAGA_TOPICS}
    orders_app = build_orders(OrdersSettings(orders_database_url=database["orders"]))
    consumers_app = build_consumers(ConsumersSettings(consumers_database_url=database["consumers"]))
    kitchen_app = build_kitchen(KitchenSettings(kitchen_database_url=database["kitchen"]))
    accounting_app = build_accounting(
        AccountingSettings(accounting_database_url=database["accounting"])
    )
    apps = (orders_app, consumers_app, kitchen_app, accounting_app)
    consumers_app.register_consumer("cust-1", "Ann")
    kitchen_app.register_restaurant("restaurant-1", "Pizzeria", ["pizza"])
    accounting_app.open_account("cust-1", TOTAL * 10 * MAX_ORDERS)
    await ensure_topics(
        kafka,
        {topic: PARTITIONS for topic in SAGA_TOPICS}
        | {dead_letter_topic(topic): PARTITIONS for topic in SAGA_TOPICS},
    )

    def new_order_id() -> str:
        return str(orders_app.place_order(**PLACE_ORDER).order_id)  # type: ignore[arg-type]

    def messages_of(order_id: str) -> list[tuple[str, bytes]]:
        verified = consumers.ConsumerVerified(
            order_id=order_id,
            consumer_id="cust-1",
            restaurant_id="restaurant-1",
            line_items=ITEMS,
            total_cents=TOTAL,
        )
        ticket = kitchen.TicketCreated(
            order_id=order_id,
            consumer_id="cust-1",
            restaurant_id="restaurant-1",
            line_items=ITEMS,
            total_cents=TOTAL,
        )
        rejected = kitchen.TicketRejected(
            order_id=order_id, restaurant_id="restaurant-1", reason="closed"
        )
        return [
            (orders.TOPIC, order_created(order_id).to_bytes()),
            (consumers.TOPIC, envelope_of(verified, "consumers", order_id).to_bytes()),
            (kitchen.TOPIC, envelope_of(ticket, "kitchen", order_id).to_bytes()),
            (kitchen.TOPIC, envelope_of(rejected, "kitchen", order_id, 2).to_bytes()),
        ]

    # What each service stored in answer to an order: one event per order.
    outcomes: dict[str, tuple[ServiceApplication, ContractMapping, type[ContractEvent]]] = {
        "orders": (orders_app, orders_relay.to_contract, orders.OrderRejected),
        "consumers": (consumers_app, consumers_relay.to_contract, consumers.ConsumerVerified),
        "kitchen": (kitchen_app, kitchen_relay.to_contract, kitchen.TicketCreated),
        "accounting": (accounting_app, accounting_relay.to_contract, accounting.CardAuthorized),
    }

    def answered(service: str) -> list[str]:
        """The order ids of ``service``'s answers, repeats kept."""
        app, to_contract, kind = outcomes[service]
        return [
            event.order_id  # type: ignore[attr-defined]  # every saga event has one
            for event in published(app, to_contract)
            if isinstance(event, kind)
        ]

    async def handled(order_ids: list[str]) -> int:
        wanted = set(order_ids)
        return min(len(wanted & set(answered(service))) for service in outcomes)

    feed = Feed(kafka, messages_of, new_order_id)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        **{f"{service.upper()}_DATABASE_URL": url for service, url in database.items()},
    }

    def start_workers(name: str) -> list[processes.Process]:
        return [
            processes.faust_worker(
                f"{service}-saga-{name}", f"write_side.{service}.saga:app", env, tmp_path
            )
            for service in SAGA_TOPICS
        ]

    try:
        restarted, _ = await kill_restart_and_time_the_recovery(
            feed, start_workers, handled, "the four saga workers"
        )
        try:
            await wait_for_async(
                lambda: _at_least(handled(feed.order_ids()), len(feed.sent)),
                timeout=60,
                interval=0.2,
                message=f"not every order was answered\n{processes.logs(*restarted)}",
            )
        finally:
            await stop_all(restarted)
        for service in outcomes:  # each once: none lost, none twice
            assert sorted(answered(service)) == sorted(feed.order_ids()), service
    finally:
        for app in apps:
            app.close()
    for topic in SAGA_TOPICS:
        assert await read_all(kafka, dead_letter_topic(topic), timeout=10) == [], topic


async def test_the_projections_worker_killed_mid_stream_comes_back_with_every_document(
    kafka: str, mongo_url: str, mongo_database: str, tmp_path: Path
) -> None:
    await ensure_topics(
        kafka,
        {topic: PARTITIONS for topic in ORDERS_PROJECTION.topics}
        | {dead_letter_topic(topic): PARTITIONS for topic in ORDERS_PROJECTION.topics},
    )
    log = ProjectionLog()

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

    def start_worker(name: str) -> list[processes.Process]:
        return [processes.faust_worker(name, "projections.worker:app", env, tmp_path)]

    try:
        [restarted], _ = await kill_restart_and_time_the_recovery(
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


async def stop_all(workers: list[processes.Process]) -> None:
    """Stop the workers at once (each waits for its own exit)."""
    await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in workers))


async def _at_least(count: Awaitable[int], expected: int) -> bool:
    return await count >= expected
