"""Poison messages on ``orders`` are dead-lettered by the processes that read it, who both
go on: the projections worker and the consumers' saga worker, real processes on a broker
of this module's own and the session's MongoDB-wire server. Each dead-letters each poison
kind, uses the good message after them, and logs its running counts.

`cqrs dead-letters` (list, show, stats, republish, a re-publish after a fix) is tested on
the kernel's own tallies topic: tests/integration/test_kernel_dead_letters.py.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import orders
from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from devstack.run import stack_topics
from devstack.servers import KafkaBroker
from kernel.dead_letters import DeadLetter, DeadLetterTopics, Filter
from kernel.errors import NotFound
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from tests import processes
from tests.support import wait_for_async
from write_side.consumers.bootstrap import build_application
from write_side.consumers.settings import ConsumersSettings

CONSUMERS = ("projections.orders", "consumers-saga")
POISON_KINDS = ("malformed", "unknown-type", "unsupported-version", "schema-violation")
LINE_ITEMS = [orders.LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250)]


@dataclass
class Stack:
    bootstrap: str
    env: dict[str, str]
    workers: list[processes.Process]
    read_models: Any

    async def letters(self, which: Filter, at_least: int) -> list[DeadLetter]:
        async def enough() -> list[DeadLetter] | None:
            async with DeadLetterTopics(self.bootstrap) as topics:
                found = await topics.letters(which)
            return found if len(found) >= at_least else None

        try:
            return await wait_for_async(enough, timeout=90, interval=0.5)
        except TimeoutError:
            pytest.fail(f"fewer than {at_least} dead letters\n{self.logs()}")

    def logs(self) -> str:
        return processes.logs(*self.workers)


def envelope(event: ContractEvent, subject: str, version: int, source: str) -> Envelope:
    return Envelope(
        id=event_id_for(source, subject, version),
        type=event.type(),
        source=source,
        subject=subject,
        time=datetime.now(UTC),
        correlationid=subject,
        causationid=subject,
        sequence=version,
        aggregateversion=version,
        data=event.model_dump(mode="json"),
    )


def order_created(order_id: str) -> Envelope:
    event = orders.OrderCreated(
        order_id=order_id,
        customer_id="nobody",
        restaurant_id="rest-1",
        delivery_address=orders.DeliveryAddress(street="1 Main St"),
        line_items=LINE_ITEMS,
        total_cents=2500,
    )
    return envelope(event, order_id, 1, "orders")


async def publish(bootstrap: str, topic: str, key: str, *values: bytes | Envelope) -> None:
    """Publish in this order on one partition (one key), as a relay would."""
    producer = reliable_producer(bootstrap)
    await producer.start()
    try:
        for value in values:
            if isinstance(value, Envelope):
                raw, headers = value.to_bytes(), value.kafka_headers()
            else:
                raw, headers = value, [("ce_id", b"poison")]
            await producer.send_and_wait(topic, raw, key=key.encode(), headers=headers)
    finally:
        await stop_producer(producer)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, mongo_url: str) -> AsyncIterator[Stack]:
    log_dir = tmp_path_factory.mktemp("dead-letters")
    broker = KafkaBroker(log_dir / "kafka").start()
    database = f"dead_letters_{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, stack_topics(partitions=4))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": database,
        "PROJECTIONS_GROUP_ID": f"projections-{uuid.uuid4().hex[:8]}",
        "PROJECTIONS_DATA_DIR": str(log_dir / "faust"),
        "CONSUMERS_DATABASE_URL": f"sqlite:///{log_dir}/consumers.db",
    }
    workers = [
        processes.projections_worker(env, log_dir),
        processes.faust_worker("consumers-saga", "write_side.consumers.saga:app", env, log_dir),
    ]
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    try:
        yield Stack(broker.bootstrap, env, workers, client[database])
    finally:
        for worker in workers:
            worker.stop()
        await client.drop_database(database)
        await client.close()
        broker.stop()


@pytest.fixture(scope="module")
async def poisoned(stack: Stack) -> str:
    """One poison message of each kind on ``orders``, then a good order: its id."""
    good = str(uuid.uuid4())
    valid = order_created(good)
    poison = {
        "malformed": b"\x00garbage",
        "unknown-type": valid.model_copy(update={"type": "orders.OrderShipped.v1"}),
        "unsupported-version": valid.model_copy(update={"type": "orders.OrderCreated.v99"}),
        "schema-violation": valid.model_copy(
            update={"data": {k: v for k, v in valid.data.items() if k != "customer_id"}}
        ),
    }
    await publish(stack.bootstrap, "orders", good, *poison.values(), valid)
    await stack.letters(Filter(topic="orders"), at_least=len(poison) * len(CONSUMERS))
    return good


async def test_each_poison_kind_is_dead_lettered_by_each_consumer_who_both_go_on(
    stack: Stack, poisoned: str
) -> None:
    letters = await stack.letters(Filter(topic="orders"), at_least=8)
    assert sorted((letter.consumer, letter.kind) for letter in letters) == sorted(
        (consumer, kind) for consumer in CONSUMERS for kind in POISON_KINDS
    )
    for letter in letters:
        assert letter.header("ce_id") is not None, "the original headers are kept"
        assert letter.original_topic == "orders" and letter.reason

    good = poisoned
    orders_read_model = stack.read_models["orders"]
    try:
        await wait_for_async(lambda: orders_read_model.find_one({"_id": good}), timeout=60)
    except TimeoutError:
        pytest.fail(f"the good message was never projected\n{stack.logs()}")
    consumers = build_application(
        ConsumersSettings(consumers_database_url=stack.env["CONSUMERS_DATABASE_URL"])
    )
    try:
        verification = await wait_for_async(
            lambda: consumers.get_verification(good), timeout=60, ignore=(NotFound,)
        )
    finally:
        consumers.close()
    assert verification.id is not None, "the saga worker reacted to the good message"
    assert all(worker.alive() for worker in stack.workers), stack.logs()
    # Each worker counts its dead letters per topic and kind, and logs the totals.
    for worker, consumer in zip(stack.workers, CONSUMERS, strict=True):
        log = worker.log_path.read_text(errors="replace")
        assert f"{consumer} dead-lettered orders[" in log, log
        totals = "orders/malformed=1, orders/schema-violation=1, orders/unknown-type=1, "
        assert f"{totals}orders/unsupported-version=1" in log, log
