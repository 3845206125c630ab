"""v1 messages already in a topic are projected by today's (v2) code into the same read
model as v2 messages, and the v1 copy the orders relay adds in the transition period
changes nothing. Real MongoDB-wire server and broker; the committed v1 fixtures are the
bytes the v1 relay published."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import orders as contract
from contracts.envelope import Envelope
from contracts.registry import editions
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from kernel.messaging import ConsumedMessage, DeadLetters
from kernel.projection_runtime import ProjectionRunner
from projections.orders import ORDERS

V1_FIXTURES = Path(__file__).parents[1] / "fixtures" / "orders-topic-v1.jsonl"
V1 = contract.OrderCreatedV1.type()
V2 = contract.OrderCreated.type()


def v1_envelopes() -> list[Envelope]:
    return [Envelope.from_bytes(line) for line in V1_FIXTURES.read_bytes().splitlines()]


def as_v2(envelope: Envelope) -> Envelope:
    """The same event as a v2 producer publishes it: the text is the street (what the
    stored v1 event upcasts to, see test_order_versions)."""
    if envelope.type != V1:
        return envelope
    address = {"street": envelope.data["delivery_address"]}
    data = {**envelope.data, "delivery_address": address}
    return envelope.model_copy(update={"type": V2, "data": data})


def messages(envelopes: list[Envelope]) -> list[ConsumedMessage]:
    return [
        ConsumedMessage("orders", 0, offset, e.subject.encode(), e.to_bytes())
        for offset, e in enumerate(envelopes)
    ]


@pytest.fixture
async def runners(kafka_bootstrap: str, mongo_url: str) -> AsyncIterator[list[ProjectionRunner]]:
    """Three orders projections, each on a database of its own."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url, tz_aware=True)
    producer = reliable_producer(kafka_bootstrap)
    await ensure_topics(kafka_bootstrap, {"orders.dead-letters": 1})
    await producer.start()
    names = [f"test_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    yield [ProjectionRunner(ORDERS, client[name], DeadLetters(producer, "test")) for name in names]
    for name in names:
        await client.drop_database(name)
    await stop_producer(producer)
    await client.close()


async def documents(runner: ProjectionRunner) -> dict[str, dict[str, Any]]:
    collection = runner.database[await runner.target()]
    return {doc["_id"]: doc async for doc in collection.find({})}


def without_wire_types(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "timeline": [{**t, "event": None} for t in document["timeline"]]}


def wire_types(document: dict[str, Any]) -> list[str]:
    return [entry["event"] for entry in document["timeline"]]


async def test_v1_fixtures_project_like_the_same_events_in_v2(runners) -> None:
    from_v1, from_v2, _ = runners
    old = v1_envelopes()

    await from_v1.handle(messages(old))
    await from_v2.handle(messages([as_v2(e) for e in old]))

    v1_documents, v2_documents = await documents(from_v1), await documents(from_v2)
    assert v1_documents.keys() == v2_documents.keys() and len(v1_documents) == 2
    for order_id, document in v1_documents.items():
        expected = v2_documents[order_id]
        # The timeline names the type that was on the wire; nothing else differs.
        assert wire_types(document) == [V1, wire_types(expected)[1]]
        assert wire_types(expected)[0] == V2
        assert without_wire_types(document) == without_wire_types(expected)
    approved = v1_documents["1f0c3b9e-2a4d-4c8e-9f31-7d5e6a1b2c3d"]
    assert approved["delivery_address"] == {
        "street": "1 Main St, 12345 Springfield, US",
        "city": None,
        "postal_code": None,
        "country": None,
    }
    assert approved["status"] == "APPROVED"


async def test_the_v1_copy_published_in_the_transition_changes_nothing(runners) -> None:
    only_v2, both, both_split = runners
    order_id = str(uuid.uuid4())
    created = contract.OrderCreated(
        order_id=order_id,
        customer_id="cust-1",
        restaurant_id="rest-1",
        delivery_address=contract.DeliveryAddress(
            street="1 Main St", city="Springfield", postal_code="12345", country="US"
        ),
        line_items=[contract.LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250)],
        total_cents=2500,
    )
    v2_envelope = as_v2(v1_envelopes()[0]).model_copy(
        update={"subject": order_id, "data": created.model_dump(mode="json")}
    )
    [_, v1_copy] = editions(created, {V1})
    v1_envelope = v2_envelope.model_copy(
        update={"type": V1, "data": v1_copy.model_dump(mode="json")}
    )

    await only_v2.handle(messages([v2_envelope]))
    await both.handle(messages([v2_envelope, v1_envelope]))  # one batch, as the relay sends
    await both_split.handle(messages([v2_envelope]))
    await both_split.handle(messages([v1_envelope]))  # the copy in the next batch

    expected = (await documents(only_v2))[order_id]
    assert (await documents(both))[order_id] == expected
    assert (await documents(both_split))[order_id] == expected
    assert wire_types(expected) == [V2]
    assert expected["delivery_address"]["city"] == "Springfield"
