"""Poison messages end as dead letters that `cqrs dead-letters` lists, shows and sends back.

Real processes on a broker of this module's own and the session's MongoDB-wire
server: the projections worker (which reads every topic) and the consumers' saga
worker (which reads ``orders``). Each poison message on ``orders`` is dead-lettered
by both, with its reason's kind; both go on with the good message after it.

"After a fix" comes in two shapes. A message the consumer's *code* refuses (a schema
violation) needs a new release; re-publishing it to the unchanged consumers brings it
back as a new dead letter with the same reason and its provenance: the round trip a
fixed release would end by consuming it. A message that lacked *data* (a ticket's
approval before its creation) is consumed once the data is there, then re-published.
"""

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from pymongo import AsyncMongoClient

from contracts import kitchen, orders
from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from devstack.cli import main
from devstack.run import stack_topics
from devstack.servers import KafkaBroker
from kernel.dead_letters import PROVENANCE_HEADER, DeadLetter, DeadLetterTopics, Filter
from kernel.errors import NotFound
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from tests import processes
from tests.integration.kafka_reading import read_all
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

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
        code = main(["dead-letters", *argv, "--bootstrap", self.bootstrap])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

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


async def test_list_show_and_stats_show_them(
    stack: Stack, poisoned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = await stack.letters(Filter(topic="orders"), at_least=8)

    code, out = stack.cli(capsys, "list", "--topic", "orders", "--consumer", "consumers-saga")
    assert code == 0, out
    saga_letters = [letter for letter in letters if letter.consumer == "consumers-saga"]
    for letter in saga_letters:
        row = next(line for line in out.splitlines() if line.startswith(letter.id + " "))
        assert letter.origin in row and letter.kind in row
    assert "projections.orders" not in out
    assert "orders.OrderShipped.v1" in out, "the type column shows ce_type"

    code, out = stack.cli(capsys, "list", "--reason-contains", "OrderCreated.v99")
    assert code == 0 and out.count("unsupported-version") == 2, out

    malformed = next(letter for letter in saga_letters if letter.kind == "malformed")
    code, out = stack.cli(capsys, "show", malformed.id)
    assert code == 0, out
    assert r"b'\x00garbage'" in out and "\x00" not in out, "bytes shown escaped"
    assert "dlq_reason: not a valid envelope" in out

    violation = next(letter for letter in saga_letters if letter.kind == "schema-violation")
    code, out = stack.cli(capsys, "show", violation.id)
    assert code == 0 and "JSON" in out and f'    "type": "{orders.OrderCreated.type()}",' in out, (
        out
    )

    code, out = stack.cli(capsys, "show", "orders.dead-letters:0:999")
    assert code == 2 and "no dead letter orders.dead-letters:0:999" in out

    code, out = stack.cli(capsys, "stats", "--topic", "orders")
    assert code == 0, out
    for consumer in CONSUMERS:
        for kind in POISON_KINDS:
            assert any(line.split()[:3] == [consumer, kind, "1"] for line in out.splitlines()), out
    assert ["total", "8", "0"] in [line.split() for line in out.splitlines()], out


async def test_republish_sends_the_original_back_once_and_dry_run_sends_nothing(
    stack: Stack, poisoned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = await stack.letters(Filter(topic="orders"), at_least=8)
    violations = [letter for letter in letters if letter.kind == "schema-violation"]
    assert len(violations) == 2 and violations[0].origin == violations[1].origin
    ids = [letter.id for letter in violations]
    before = await end_offsets(stack.bootstrap, "orders")

    code, out = stack.cli(capsys, "republish", *ids, "--dry-run")
    assert code == 0 and "dry run: 1 message(s), nothing sent" in out, out
    assert f"{PROVENANCE_HEADER}={ids[0]}" in out, "one copy for both consumers' letters"
    assert await end_offsets(stack.bootstrap, "orders") == before, "a dry run sends nothing"
    code, out = stack.cli(capsys, "republish", *ids)
    assert code == 0, out
    assert await end_offsets(stack.bootstrap, "orders") != before
    assert f"{ids[1]} holds the same message as {ids[0]}" in out, out
    sent = re.search(rf"^re-published {ids[0]} as (\S+)$", out, re.MULTILINE)
    assert sent, out
    republished_as = sent[1]
    copy = await read_one(stack.bootstrap, "orders", republished_as)
    original = violations[0]
    assert (copy.key, copy.value) == (original.key, original.value)
    assert copy.partition == original.original_partition
    headers = tuple((name, bytes(value)) for name, value in copy.headers)
    assert headers == (*original.original_headers, (PROVENANCE_HEADER, ids[0].encode()))

    code, out = stack.cli(capsys, "list", "--topic", "orders")
    assert sum(f"as {republished_as}" in line for line in out.splitlines()) == 2, out
    after = await end_offsets(stack.bootstrap, "orders")
    code, out = stack.cli(capsys, "republish", ids[1])
    assert code == 2 and "re-published already" in out and "--again" in out, out
    code, out = stack.cli(capsys, "republish", "--all", "--topic", "orders", "--dry-run")
    assert code == 0 and "skipping 2 re-published already" in out, out
    assert await end_offsets(stack.bootstrap, "orders") == after, "nothing sent"

    # Unchanged consumers read the copy again and dead-letter it again, same reason.
    again = await stack.letters(Filter(topic="orders"), at_least=10)
    returned = [letter for letter in again if letter.origin == republished_as]
    assert {(letter.consumer, letter.kind) for letter in returned} == {
        (consumer, "schema-violation") for consumer in CONSUMERS
    }
    assert all(letter.header(PROVENANCE_HEADER) == ids[0] for letter in returned)
    assert all(worker.alive() for worker in stack.workers), stack.logs()


async def test_a_dead_letter_republished_after_the_fix_is_consumed(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    order_id = str(uuid.uuid4())
    approved = envelope(
        kitchen.TicketApproved(order_id=order_id, restaurant_id="rest-1"), order_id, 2, "kitchen"
    )
    await publish(stack.bootstrap, "kitchen", order_id, approved)
    which = Filter(topic="kitchen", consumer="projections.tickets")
    [dead] = await stack.letters(which, at_least=1)
    assert dead.kind == "projection-failed" and "never created" in dead.reason

    # The fix: the ticket's creation, which the kitchen had not published, is there now.
    created = kitchen.TicketCreated(
        order_id=order_id,
        consumer_id="cust-1",
        restaurant_id="rest-1",
        line_items=LINE_ITEMS,
        total_cents=2500,
    )
    await publish(stack.bootstrap, "kitchen", order_id, envelope(created, order_id, 1, "kitchen"))
    tickets = stack.read_models["tickets"]
    await wait_for_async(lambda: tickets.find_one({"_id": order_id}), timeout=60)

    code, out = stack.cli(capsys, "republish", "--all", "--topic", "kitchen")
    assert code == 0 and f"re-published {dead.id} as kitchen[" in out, out
    try:
        await wait_for_async(
            lambda: tickets.find_one({"_id": order_id, "status": "AWAITING_ACCEPTANCE"}),
            timeout=60,
        )
    except TimeoutError:
        pytest.fail(f"the re-published approval was not projected\n{stack.logs()}")
    code, out = stack.cli(capsys, "stats", "--topic", "kitchen")
    assert any(
        line.split() == ["projections.tickets", "projection-failed", "1", "1"]
        for line in out.splitlines()
    ), out


async def end_offsets(bootstrap: str, topic: str) -> list[int]:
    async with DeadLetterTopics(bootstrap) as topics:
        partitions = await topics.partitions([topic])
        ends = await topics.consumer.end_offsets(partitions)
    return [ends[tp] for tp in partitions]


async def read_one(bootstrap: str, topic: str, where: str) -> ConsumerRecord[bytes, bytes]:
    """The record at ``topic[partition]@offset``."""
    partition, offset = (int(n) for n in where.removeprefix(f"{topic}[").split("]@"))
    records = await read_all(bootstrap, topic)
    [record] = [r for r in records if (r.partition, r.offset) == (partition, offset)]
    return record
