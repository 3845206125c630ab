"""Domain events → public contract events, and what consumers refuse to read."""

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate, event

from contracts import ContractError, Envelope, decode_envelope, parse_data
from contracts import orders as contract
from contracts.consistency import ConsistencyToken, InvalidToken
from tests.reference_saga.examples import PLACE_ORDER
from write_side.orders.domain import Order
from write_side.orders.relay import to_contract

# Fixed, not uuid4(): every pytest-xdist worker must collect the same test ids.
AN_ORDER = "0b6c5f0e-6a8f-4b5e-9a53-2d1c3f9e8a71"

PLACE = PLACE_ORDER


def events_of(*commands) -> tuple[Order, list]:
    order = Order(**PLACE)
    for command in commands:
        command(order)
    return order, order.collect_events()


# to_contract


def test_placed_maps_to_order_created_with_its_items_and_total():
    order, [placed] = events_of()

    created = to_contract(placed)

    assert created == contract.OrderCreated(
        order_id=str(order.id),
        customer_id="customer-1",
        restaurant_id="restaurant-1",
        delivery_address=contract.DeliveryAddress(
            street="1 Main Street", city="Springfield", postal_code="12345", country="US"
        ),
        line_items=[
            contract.LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250),
            contract.LineItem(menu_item_id="soda", quantity=3, unit_price_cents=300),
        ],
        total_cents=2 * 1250 + 3 * 300,
    )
    assert created.type() == "orders.OrderCreated.v2"


def test_approved_maps_to_order_approved():
    order, [_, approved] = events_of(lambda o: o.approve())

    assert to_contract(approved) == contract.OrderApproved(order_id=str(order.id))


def test_rejected_maps_to_order_rejected_with_the_reason():
    order, [_, rejected] = events_of(lambda o: o.reject("card declined", "accounting"))

    assert to_contract(rejected) == contract.OrderRejected(
        order_id=str(order.id), reason="card declined", failed_step="accounting"
    )


def test_cancelled_maps_to_order_cancelled_with_the_reason():
    order, [_, _, cancelled] = events_of(
        lambda o: o.approve(), lambda o: o.cancel("changed my mind")
    )

    assert to_contract(cancelled) == contract.OrderCancelled(
        order_id=str(order.id), reason="changed my mind"
    )


class Stranger(Aggregate):
    @event("Appeared")
    def __init__(self) -> None:
        pass


def test_an_unknown_domain_event_is_a_type_error():
    [appeared] = Stranger().collect_events()

    with pytest.raises(TypeError, match="no contract mapping for domain event Stranger.Appeared"):
        to_contract(appeared)


# decode_envelope / parse_data


def envelope_dict(type_: str = "orders.OrderCancelled.v1", **data) -> dict:
    order_id = str(uuid4())
    return {
        "id": str(uuid4()),
        "type": type_,
        "source": "orders",
        "subject": order_id,
        "time": datetime.now(UTC).isoformat(),
        "correlationid": "corr",
        "causationid": "cause",
        "sequence": 1,
        "aggregateversion": 1,
        "data": data or {"order_id": order_id, "reason": "changed my mind"},
    }


def raw(**fields) -> bytes:
    return json.dumps(envelope_dict(**fields)).encode()


def test_a_valid_message_round_trips():
    _, [_, _, cancelled] = events_of(lambda o: o.approve(), lambda o: o.cancel("changed my mind"))
    contract_event = to_contract(cancelled)
    envelope = Envelope(
        **{**envelope_dict(contract_event.type()), "data": contract_event.model_dump()}
    )

    parsed = parse_data(decode_envelope(envelope.to_bytes()), contract.EVENTS)

    assert parsed == contract_event


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (None, "empty message"),
        (b"not json {", "not a valid envelope"),
        (b"\xff\xfe\x00", "not a valid envelope"),
        (b"[1, 2]", "not a valid envelope"),
        (
            json.dumps({k: v for k, v in envelope_dict().items() if k != "subject"}).encode(),
            "not a valid envelope.*subject",
        ),
        (
            json.dumps({**envelope_dict(), "type": "OrderCreated"}).encode(),
            "not a valid envelope.*type",
        ),
    ],
    ids=["none", "not-json", "not-utf8", "json-not-an-object", "missing-field", "malformed-type"],
)
def test_an_unreadable_envelope_is_a_contract_error(message, reason):
    with pytest.raises(ContractError, match=reason):
        decode_envelope(message)


def test_an_unknown_type_is_a_contract_error():
    envelope = decode_envelope(raw(type_="orders.OrderTeleported.v1"))

    with pytest.raises(ContractError, match="unknown event type: orders.OrderTeleported.v1"):
        parse_data(envelope, contract.EVENTS)


def test_a_known_type_the_consumer_does_not_accept_is_a_contract_error():
    envelope = decode_envelope(raw(type_="orders.OrderCancelled.v1"))

    with pytest.raises(
        ContractError, match="unsupported event type for this consumer: orders.OrderCancelled.v1"
    ):
        parse_data(envelope, (contract.OrderCreated, contract.OrderApproved))


@pytest.mark.parametrize(
    ("type_", "data", "field"),
    [
        (
            "orders.OrderCreated.v1",
            {
                "order_id": "o-1",
                "customer_id": "c",
                "restaurant_id": "r",
                "delivery_address": "a",
                "line_items": [{"menu_item_id": "m", "quantity": 0, "unit_price_cents": 100}],
                "total_cents": 100,
            },
            "line_items.0.quantity",
        ),
        (
            "orders.OrderCreated.v1",
            {
                "order_id": "o-1",
                "customer_id": "c",
                "restaurant_id": "r",
                "delivery_address": "a",
                "line_items": [],
                "total_cents": 100,
            },
            "line_items",
        ),
        ("orders.OrderRejected.v1", {"order_id": "o-1"}, "reason"),
    ],
    ids=["quantity-0", "no-line-items", "missing-reason"],
)
def test_data_violating_its_contract_is_a_contract_error(type_, data, field):
    envelope = decode_envelope(raw(type_=type_, **data))

    with pytest.raises(ContractError, match=f"{type_} violates its contract: .*{field}"):
        parse_data(envelope, contract.EVENTS)


# ConsistencyToken


def test_the_largest_consistency_token_mongodb_stores_is_taken():
    token = ConsistencyToken("orders", 2**63 - 1, str(uuid4()), 2**63 - 1)

    assert ConsistencyToken.parse(str(token)) == token


def test_a_consistency_token_round_trips_through_its_string():
    token = ConsistencyToken("orders", 42, str(uuid4()), 3)

    assert str(token) == f"orders:42:{token.aggregate_id}:3"
    assert ConsistencyToken.parse(str(token)) == token


@pytest.mark.parametrize(
    "text",
    [
        "",
        "orders",
        f"orders:1:{AN_ORDER}",
        f"orders:1:{AN_ORDER}:1:extra",
        f"orders:one:{AN_ORDER}:1",
        "orders:1:not-a-uuid:1",
        f"orders:1:{AN_ORDER}:v1",
        f"orders:0:{AN_ORDER}:1",
        f"orders:1:{AN_ORDER}:0",
        f"orders:-5:{AN_ORDER}:1",
        # Beyond what MongoDB stores (an int64): a 400, never the driver's OverflowError.
        f"orders:{2**63}:{AN_ORDER}:1",
        f"orders:1:{AN_ORDER}:{2**63}",
        f"orders:{10**400}:{AN_ORDER}:{10**30}",
        # Only plain ASCII digits: int() would take these.
        f"orders: 1:{AN_ORDER}:1",
        f"orders:1_0:{AN_ORDER}:1",
        f"orders:+1:{AN_ORDER}:1",
        f"orders:\u0661:{AN_ORDER}:1",
    ],
)
def test_a_malformed_consistency_token_is_refused(text):
    with pytest.raises(InvalidToken, match="malformed consistency token"):
        ConsistencyToken.parse(text)
