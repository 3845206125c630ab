"""Two majors of one contract: v2 readers upcast v1, v1 readers keep v1, and a producer in
its transition period publishes both (newest first)."""

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from contracts import ContractError, Envelope, decode_envelope, parse_data
from contracts import orders as contract
from contracts.registry import check_also_publish, editions, readable_types

V1_FIXTURES = Path(__file__).parents[1] / "fixtures" / "orders-topic-v1.jsonl"
V1 = "orders.OrderCreated.v1"
ORDER_ID = str(uuid4())
ITEMS = [contract.LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250)]


def created_v2(**address: str) -> contract.OrderCreated:
    return contract.OrderCreated(
        order_id=ORDER_ID,
        customer_id="cust-1",
        restaurant_id="rest-1",
        delivery_address=contract.DeliveryAddress(**{"street": "1 Main St", **address}),
        line_items=ITEMS,
        total_cents=2500,
    )


def envelope_of(event: contract.ContractEvent) -> Envelope:
    return Envelope(
        id=str(uuid4()),
        type=event.type(),
        source="orders",
        subject=ORDER_ID,
        time=datetime.now(UTC),
        correlationid="c",
        causationid="c",
        sequence=1,
        aggregateversion=1,
        data=event.model_dump(mode="json"),
    )


def test_a_v2_reader_reads_v1_with_the_whole_text_as_street() -> None:
    old = contract.OrderCreatedV1(**{**created_v2().model_dump(), "delivery_address": "a, b"})

    read = parse_data(envelope_of(old), (contract.OrderCreated,))

    assert read == created_v2().model_copy(
        update={"delivery_address": contract.DeliveryAddress(street="a, b")}
    )


def test_a_v1_reader_reads_v1_as_it_is_and_refuses_v2() -> None:
    [_, v1] = editions(created_v2(city="Springfield"), {V1})

    assert parse_data(envelope_of(v1), (contract.OrderCreatedV1,)) == v1
    with pytest.raises(ContractError, match="unsupported version for this consumer: .*v2"):
        parse_data(envelope_of(created_v2()), (contract.OrderCreatedV1,))


def test_a_v2_reader_reads_both_majors_and_a_v1_reader_only_v1() -> None:
    assert {V1, "orders.OrderCreated.v2"} <= readable_types((contract.OrderCreated,))
    assert "orders.OrderCreated.v2" not in readable_types((contract.OrderCreatedV1,))


def test_v1_data_violating_v1_is_refused_naming_v1() -> None:
    envelope = envelope_of(
        contract.OrderCreatedV1(**{**created_v2().model_dump(), "delivery_address": "x"})
    )
    broken = envelope.model_copy(update={"data": {**envelope.data, "total_cents": 0}})

    with pytest.raises(ContractError, match=f"{V1} violates its contract: total_cents"):
        parse_data(broken, (contract.OrderCreated,))


def test_in_the_transition_the_producer_publishes_v2_then_v1_as_one_line_of_text() -> None:
    event = created_v2(city="Springfield", postal_code="12345", country="US")

    published = editions(event, {V1})

    assert [e.type() for e in published] == ["orders.OrderCreated.v2", V1]
    assert published[1].delivery_address == "1 Main St, 12345 Springfield, US"  # type: ignore[attr-defined]


def test_after_the_transition_only_v2_is_published() -> None:
    assert editions(created_v2(), ()) == [created_v2()]


def test_a_transition_setting_naming_no_older_major_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot also publish orders.OrderApproved.v0"):
        check_also_publish({"orders.OrderApproved.v0"})


def test_every_committed_v1_fixture_message_is_read_by_v2_consumers() -> None:
    messages = [decode_envelope(line) for line in V1_FIXTURES.read_bytes().splitlines()]
    created = [m for m in messages if m.type == V1]

    read = [parse_data(m, (contract.OrderCreated,)) for m in created]

    assert [event.delivery_address.street for event in read] == [  # type: ignore[attr-defined]
        m.data["delivery_address"] for m in created
    ]
