"""A saga worker's batch, as its agent hands it over: one transaction, exactly-once effects.

``kernel.saga.handle`` is what the consumers saga worker runs on each batch
its Faust agent takes: here on the consumers service's store (SQLite, PostgreSQL) with
a real broker for the dead letters.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import pytest

from contracts import consumers, orders
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from kernel.messaging import ConsumedMessage, DeadLetters, dead_letter_topic
from kernel.reactions import Reaction, Reactor
from kernel.saga import handle
from tests.batching import commits_of
from tests.integration.kafka_reading import read_all
from tests.reference_saga.integration.test_consumers_accounting_reactions import (
    message,
    order_created,
    published,
)
from write_side.consumers import relay as consumers_relay
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.bootstrap import build_application
from write_side.consumers.saga import REACTIONS
from write_side.consumers.settings import ConsumersSettings


@pytest.fixture
def app(store) -> Iterator[ConsumersApplication]:
    opened = build_application(
        ConsumersSettings(
            consumers_database_url=store.url("consumers"), consumers_database_schema=store.schema
        )
    )
    yield opened
    opened.close()


@pytest.fixture
def reactor(app: ConsumersApplication) -> Reactor:
    return Reactor(app, "consumers-saga", REACTIONS)


@pytest.fixture
async def dead_letters(kafka: str) -> AsyncIterator[DeadLetters]:
    await ensure_topics(kafka, {dead_letter_topic(orders.TOPIC): 1})
    producer = reliable_producer(kafka)
    await producer.start()
    yield DeadLetters(producer, "consumers-saga")
    await stop_producer(producer)


def decisions(app: ConsumersApplication, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The orders the service decides on from now on (a list that fills as it does);
    deciding on a consumer ``cust-broken`` raises."""
    decided: list[str] = []
    verify = app.verify

    def counting(order_id: str, consumer_id: str, *args: Any, **kwargs: Any) -> Any:
        decided.append(order_id)
        if consumer_id == "cust-broken":
            raise RuntimeError("the consumer's record is unreadable")
        return verify(order_id, consumer_id, *args, **kwargs)

    monkeypatch.setattr(app, "verify", counting)
    return decided


async def test_a_mixed_batch_is_one_transaction_and_each_message_takes_effect_once(
    app, reactor, dead_letters, kafka, monkeypatch
):
    app.register_consumer("cust-1", "Ann")
    a, b, c, d = (str(uuid4()) for _ in range(4))
    handled_before = message(order_created(c), orders.TOPIC, offset=7, partition=1)
    await handle(reactor, dead_letters, [handled_before])  # C, in an earlier batch
    decided = decisions(app, monkeypatch)
    commits = commits_of(app)
    a_created = order_created(a)
    poison = ConsumedMessage(orders.TOPIC, 0, 1, key=b"?", value=b"{not json")
    batch = [
        message(a_created, orders.TOPIC, offset=0, partition=0),
        poison,
        message(order_created(b, "cust-broken"), orders.TOPIC, offset=2, partition=0),
        message(a_created, orders.TOPIC, offset=3, partition=0),  # A re-published
        handled_before,  # re-delivered (a rebalance, a restart)
        message(order_created(d), orders.TOPIC, offset=8, partition=1),
    ]

    await handle(reactor, dead_letters, batch)

    assert decided == [a, b, a, d], "C was decided again, or a message was skipped"
    events = published(app, consumers_relay.to_contract)
    verified = [e.order_id for e in events if isinstance(e, consumers.ConsumerVerified)]
    assert verified == [c, a, d]  # each once
    [failed] = [e for e in events if isinstance(e, consumers.ConsumerVerificationFailed)]
    assert failed.order_id == b
    assert "RuntimeError: the consumer's record is unreadable" in failed.reason
    [dead] = await read_all(kafka, dead_letter_topic(orders.TOPIC))
    headers = dict(dead.headers)
    assert (dead.value, headers["dlq_reason_kind"], headers["dlq_offset"]) == (
        b"{not json",
        b"malformed",
        b"1",
    )
    assert len(commits) == 1  # once the poison's dead letter was sent, all of the batch
    assert app.recorder.max_tracking_id("consumers-saga:orders:0") == 4
    assert app.recorder.max_tracking_id("consumers-saga:orders:1") == 9

    await handle(reactor, dead_letters, batch)  # the whole batch re-delivered

    assert decided == [a, b, a, d], "a re-delivered message was handled again"
    assert published(app, consumers_relay.to_contract) == events
    assert len(await read_all(kafka, dead_letter_topic(orders.TOPIC))) == 1


async def test_a_reaction_failing_with_no_failure_to_record_is_dead_lettered_the_rest_applied(
    app, dead_letters, kafka
):
    app.register_consumer("cust-1", "Ann")

    def verify_or_raise(app: ConsumersApplication, event: orders.OrderCreated, _: Any) -> None:
        if event.customer_id == "cust-broken":
            raise RuntimeError("cannot decide")
        items = [item.model_dump() for item in event.line_items]
        app.verify(event.order_id, event.customer_id, event.restaurant_id, items, event.total_cents)

    reactor = Reactor(app, "consumers-saga", [Reaction(orders.OrderCreated, verify_or_raise)])
    a, b, c = (str(uuid4()) for _ in range(3))
    commits = commits_of(app)

    await handle(
        reactor,
        dead_letters,
        [
            message(order_created(a), orders.TOPIC, offset=0),
            message(order_created(b, "cust-broken"), orders.TOPIC, offset=1),
            message(order_created(c), orders.TOPIC, offset=2),
        ],
    )

    verified = [
        e.order_id
        for e in published(app, consumers_relay.to_contract)
        if isinstance(e, consumers.ConsumerVerified)
    ]
    assert verified == [a, c]
    [dead] = await read_all(kafka, dead_letter_topic(orders.TOPIC))
    headers = dict(dead.headers)
    assert headers["dlq_reason_kind"] == b"reaction-failed"
    assert headers["dlq_reason"] == b"reaction failed: RuntimeError: cannot decide"
    assert headers["dlq_offset"] == b"1"
    # A; then, once B's dead letter was sent, B recorded as handled with C.
    assert len(commits) == 2
    assert app.recorder.max_tracking_id("consumers-saga:orders:0") == 3


async def test_messages_another_worker_handled_meanwhile_take_no_second_effect(
    store, app, reactor, dead_letters
):
    """After a rebalance a worker gets a partition back whose messages another worker
    handled meanwhile: the inbox refuses the batch, and only the new message is applied."""
    app.register_consumer("cust-1", "Ann")
    other_app = build_application(
        ConsumersSettings(
            consumers_database_url=store.url("consumers"), consumers_database_schema=store.schema
        )
    )
    other = Reactor(other_app, "consumers-saga", REACTIONS)
    ids = [str(uuid4()) for _ in range(4)]
    messages = [message(order_created(i), orders.TOPIC, offset=n) for n, i in enumerate(ids)]
    try:
        await handle(reactor, dead_letters, messages[:1])  # this worker: offset 0
        await handle(other, dead_letters, messages[1:3])  # the other: offsets 1 and 2
        await handle(reactor, dead_letters, messages[1:])  # back to this one: 1 to 3
    finally:
        other_app.close()

    events = published(app, consumers_relay.to_contract)
    assert [e.order_id for e in events if isinstance(e, consumers.ConsumerVerified)] == ids
    assert app.recorder.max_tracking_id("consumers-saga:orders:0") == 4
