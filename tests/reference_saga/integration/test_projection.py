"""The orders projection against a real MongoDB-wire server and a real broker: the saga's
view from four topics, and the projections worker process. The runtime's batches,
version guard, conflicts and dead letters are tested on the kernel's own read model
(tests/integration/test_kernel_projection.py)."""

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import accounting, consumers, kitchen
from contracts import orders as contract
from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from kernel.messaging import ConsumedMessage, DeadLetters
from kernel.projection import Projection, ProjectionError
from kernel.projection_runtime import ProjectionRunner
from projections.orders import ORDERS
from tests import processes
from tests.integration.kafka_reading import read_topic
from tests.mongo_commands import CommandCounter
from tests.support import wait_for, wait_for_async

LINE_ITEMS = [contract.LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250)]


class Sequence:
    """Builds the messages a relay would publish, with increasing positions."""

    def __init__(self) -> None:
        self.position = 0
        self.offset = 0

    def message(
        self, event: ContractEvent, order_id: str, version: int, source: str = "orders"
    ) -> ConsumedMessage:
        self.position += 1
        self.offset += 1
        envelope = Envelope(
            id=event_id_for(source, order_id, version),
            type=event.type(),
            source=source,
            subject=order_id,
            time=datetime.now(UTC),
            correlationid="c",
            causationid="c",
            sequence=self.position,
            aggregateversion=version,
            data=event.model_dump(mode="json"),
        )
        return self.raw(envelope.to_bytes(), key=order_id.encode(), topic=source)

    def raw(
        self, value: bytes | None, key: bytes | None = b"k", topic: str = "orders"
    ) -> ConsumedMessage:
        self.offset += 1
        return ConsumedMessage(topic, 0, self.offset, key, value, (("ce_id", b"x"),))

    def created(self, order_id: str) -> ConsumedMessage:
        event = contract.OrderCreated(
            order_id=order_id,
            customer_id="customer-1",
            restaurant_id="restaurant-1",
            delivery_address=contract.DeliveryAddress(street="1 Main St", city="Springfield"),
            line_items=LINE_ITEMS,
            total_cents=2500,
        )
        return self.message(event, order_id, 1)


@pytest.fixture
async def runner(kafka: str, mongo_url: str, mongo_database: str):  # type: ignore[no-untyped-def]
    counter = CommandCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url, event_listeners=[counter])
    producer = reliable_producer(kafka)
    await ensure_topics(kafka, {"orders.dead-letters": 1})
    await producer.start()
    runner = ProjectionRunner(ORDERS, client[mongo_database], DeadLetters(producer, "test"))
    runner.commands = counter.commands  # type: ignore[attr-defined]
    await runner.prepare()
    yield runner
    await stop_producer(producer)
    await client.close()


async def document(runner: ProjectionRunner, order_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await runner.database["orders"].find_one({"_id": order_id})
    return found


async def test_created_then_cancelled_gives_a_cancelled_order(runner):
    log, order_id = Sequence(), str(uuid.uuid4())
    await runner.handle(
        [
            log.created(order_id),
            log.message(contract.OrderCancelled(order_id=order_id, reason="too slow"), order_id, 2),
        ]
    )
    doc = await document(runner, order_id)
    assert doc is not None
    assert (doc["status"], doc["cancellation_reason"]) == ("CANCELLED", "too slow")
    assert (doc["version"], doc["position"], doc["created_position"]) == (2, 2, 1)
    assert doc["total_cents"] == 2500


async def test_a_creation_whose_document_exists_already_is_applied_to_it(runner):
    """An order's document made first by another topic's event: the creation, taken
    to be new, meets it (a duplicate key), and the batch is applied again on it."""
    log, order_id = Sequence(), str(uuid.uuid4())
    verified, created = saga_messages(log, order_id)[1], log.created(order_id)
    await runner.handle([verified])

    runner.commands.clear()
    result = await fresh_runner(runner).handle([created])

    # tried as an insert, then loaded and written as an update
    assert runner.commands.count(("insert", "orders")) == 1
    assert runner.commands.count(("find", "orders")) == 1
    assert runner.commands.count(("update", "orders")) == 1
    assert result.rejected == 0
    doc = await document(runner, order_id)
    assert doc is not None and doc["status"] == "APPROVAL_PENDING"
    assert doc["saga"]["consumer_verification"] == "VERIFIED"
    assert doc["_applied"] == {f"consumers/{order_id}": 1, f"orders/{order_id}": 1}


async def test_an_event_taken_for_a_new_documents_first_is_not_rejected_if_it_exists(runner):
    """A projection that refuses an event without its document (ProjectionError): a
    first event guessed to need no lookup is applied to the stored document, not
    dead-lettered."""

    def needs_an_order(document: dict[str, Any] | None, envelope: Envelope, _: Any) -> Any:
        if document is None and envelope.type != contract.OrderCreated.type():
            raise ProjectionError(f"{envelope.type} before its order")
        return {"seen": [*(document or {}).get("seen", []), envelope.type]}

    strict = Projection(
        name=f"strict_{uuid.uuid4().hex[:6]}",
        topics=(contract.TOPIC, consumers.TOPIC),
        collection="strict",
        accepts=(*contract.EVENTS, *consumers.EVENTS),
        apply=needs_an_order,
    )
    log, order_id = Sequence(), str(uuid.uuid4())
    verified, created = saga_messages(log, order_id)[1], log.created(order_id)
    first = ProjectionRunner(strict, runner.database, runner.dead_letters)
    await first.prepare()
    await first.handle([created])

    result = await ProjectionRunner(strict, runner.database, runner.dead_letters).handle([verified])

    assert result.rejected == 0
    doc = await runner.database[await first.target()].find_one({"_id": order_id})
    assert doc is not None
    assert doc["seen"] == [contract.OrderCreated.type(), consumers.ConsumerVerified.type()]


def fresh_runner(runner: ProjectionRunner) -> ProjectionRunner:
    """Another runner on the same collections, knowing no document (a restart)."""
    return ProjectionRunner(ORDERS, runner.database, runner.dead_letters)


async def test_the_worker_dead_letters_a_poison_message_and_goes_on(
    kafka: str, mongo_url: str, mongo_database: str, tmp_path: Path
):
    await ensure_topics(kafka, {"orders": 4, "orders.dead-letters": 1})
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": mongo_database,
        "PROJECTIONS_GROUP_ID": f"g{uuid.uuid4().hex}",
    }
    worker = processes.projections_worker(env, tmp_path)
    producer = reliable_producer(kafka)
    await producer.start()
    log, order_id = Sequence(), str(uuid.uuid4())
    valid = log.created(order_id)
    try:
        await producer.send_and_wait("orders", b"\x00garbage", key=order_id.encode())
        await producer.send_and_wait("orders", valid.value, key=order_id.encode())
        client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
        orders = client[mongo_database]["orders"]
        try:
            await wait_for_async(lambda: orders.find_one({"_id": order_id}), timeout=60)
        except TimeoutError:
            pytest.fail(f"the valid message was never projected\n{processes.logs(worker)}")
        finally:
            await client.close()
        dead = await read_topic(kafka, "orders.dead-letters", until=lambda r: len(r) >= 1)
        assert dead[0].value == b"\x00garbage"
        assert worker.alive(), worker.log()
    finally:
        await stop_producer(producer)
        worker.stop()
    wait_for(lambda: not worker.alive(), timeout=20, message="worker did not stop")


def saga_messages(log: Sequence, order_id: str) -> list[ConsumedMessage]:
    """One approved order's saga, as the four services publish it."""
    items = LINE_ITEMS
    return [
        log.created(order_id),
        log.message(
            consumers.ConsumerVerified(
                order_id=order_id,
                consumer_id="customer-1",
                restaurant_id="restaurant-1",
                line_items=items,
                total_cents=2500,
            ),
            order_id,
            1,
            source="consumers",
        ),
        log.message(
            kitchen.TicketCreated(
                order_id=order_id,
                consumer_id="customer-1",
                restaurant_id="restaurant-1",
                line_items=items,
                total_cents=2500,
            ),
            order_id,
            1,
            source="kitchen",
        ),
        log.message(
            accounting.CardAuthorized(
                order_id=order_id, consumer_id="customer-1", amount_cents=2500
            ),
            order_id,
            1,
            source="accounting",
        ),
        log.message(
            kitchen.TicketApproved(order_id=order_id, restaurant_id="restaurant-1"),
            order_id,
            2,
            source="kitchen",
        ),
        log.message(contract.OrderApproved(order_id=order_id), order_id, 2),
    ]


async def test_the_saga_view_is_the_same_whatever_order_the_topics_arrive_in(runner):
    in_order, shuffled = str(uuid.uuid4()), str(uuid.uuid4())
    log = Sequence()
    messages = saga_messages(log, in_order)
    await runner.handle(messages)

    other = saga_messages(Sequence(), shuffled)
    # Per aggregate the order holds (Kafka keys), across topics anything goes:
    # the kitchen's events first, then accounting, then orders, then consumers.
    await runner.handle([other[2], other[4]])
    await runner.handle([other[3], other[0]])
    await runner.handle([other[5], other[1], other[3], other[0]])  # with duplicates

    first, second = await document(runner, in_order), await document(runner, shuffled)
    assert first is not None and second is not None
    assert first["status"] == second["status"] == "APPROVED"
    assert (
        first["saga"]
        == second["saga"]
        == {
            "state": "APPROVED",
            "consumer_verification": "VERIFIED",
            "ticket": "AWAITING_ACCEPTANCE",
            "card_authorization": "AUTHORIZED",
            "failed_step": None,
            "reason": None,
        }
    )
    assert len(first["timeline"]) == len(second["timeline"]) == 6
    assert {e["service"] for e in second["timeline"]} == {
        "orders",
        "consumers",
        "kitchen",
        "accounting",
    }


async def test_a_rejected_saga_names_the_failed_step(runner):
    log, order_id = Sequence(), str(uuid.uuid4())
    await runner.handle(
        [
            log.created(order_id),
            log.message(
                consumers.ConsumerVerificationFailed(
                    order_id=order_id, consumer_id="customer-1", reason="consumer is deactivated"
                ),
                order_id,
                1,
                source="consumers",
            ),
            log.message(
                contract.OrderRejected(
                    order_id=order_id, reason="consumer is deactivated", failed_step="consumers"
                ),
                order_id,
                2,
            ),
        ]
    )
    doc = await document(runner, order_id)
    assert doc is not None
    assert (doc["status"], doc["failed_step"]) == ("REJECTED", "consumers")
    assert doc["saga"]["consumer_verification"] == "FAILED"
    assert (doc["saga"]["failed_step"], doc["saga"]["reason"]) == (
        "consumers",
        "consumer is deactivated",
    )
    assert doc["saga"]["ticket"] is None
