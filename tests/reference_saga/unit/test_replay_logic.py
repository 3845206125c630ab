"""The orders read model a rebuild makes does not depend on the order the four services'
events arrive in, nor on a round trip through MongoDB. No server. (Build names, lag
arithmetic and the shadow report: tests/unit/test_kernel_replay_logic.py.)"""

import itertools
from datetime import UTC, datetime, timedelta

from contracts import accounting, consumers, kitchen
from contracts import orders as contract
from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from kernel.projection import Document
from projections.orders import ORDERS

ORDER = "6f1c1a52-4a51-4f0e-9a3e-0d1f7a9c2b11"
ITEMS = [contract.LineItem(menu_item_id="pizza", quantity=1, unit_price_cents=900)]
START = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def envelope(event: ContractEvent, source: str, version: int, offset_ms: int) -> Envelope:
    return Envelope(
        id=event_id_for(source, ORDER, version),
        type=event.type(),
        source=source,
        subject=ORDER,
        time=START + timedelta(milliseconds=offset_ms, microseconds=offset_ms * 7),
        correlationid="c",
        causationid="c",
        sequence=offset_ms + 1,
        aggregateversion=version,
        data=event.model_dump(mode="json"),
    )


SAGA = [
    (
        contract.OrderCreated(
            order_id=ORDER,
            customer_id="c",
            restaurant_id="r",
            delivery_address=contract.DeliveryAddress(street="1 Main St"),
            line_items=ITEMS,
            total_cents=900,
        ),
        "orders",
        1,
        0,
    ),
    (
        consumers.ConsumerVerified(
            order_id=ORDER, consumer_id="c", restaurant_id="r", line_items=ITEMS, total_cents=900
        ),
        "consumers",
        1,
        5,
    ),
    (
        kitchen.TicketCreated(
            order_id=ORDER, consumer_id="c", restaurant_id="r", line_items=ITEMS, total_cents=900
        ),
        "kitchen",
        1,
        5,  # the same millisecond as the verification: the event id decides
    ),
    (
        accounting.CardAuthorized(order_id=ORDER, consumer_id="c", amount_cents=900),
        "accounting",
        1,
        9,
    ),
    (contract.OrderApproved(order_id=ORDER), "orders", 2, 12),
]


def project(saga: list[tuple[ContractEvent, str, int, int]]) -> Document | None:
    document: Document | None = None
    for event, source, version, offset_ms in saga:
        document = ORDERS.apply(document, envelope(event, source, version, offset_ms), event)
    return document


def test_the_order_view_is_the_same_in_any_arrival_order_across_services():
    orders_events = [s for s in SAGA if s[1] == "orders"]
    others = [s for s in SAGA if s[1] != "orders"]
    expected = project(SAGA)
    assert expected is not None
    for permutation in itertools.permutations(others):
        # Per aggregate the order holds; across services anything goes.
        for cut in range(len(permutation) + 1):
            arrival = [*permutation[:cut], *orders_events, *permutation[cut:]]
            assert project(arrival) == expected
    events = [entry["event"] for entry in expected["timeline"]]
    assert events[0] == contract.OrderCreated.type() and events[-1] == "orders.OrderApproved.v1"


def test_the_timeline_sorts_the_same_after_a_round_trip_through_mongodb():
    document = project(SAGA[:3])
    assert document is not None
    # MongoDB keeps milliseconds and drops the time zone (tz_aware=False).
    for entry in document["timeline"]:
        moment = entry["time"].astimezone(UTC).replace(tzinfo=None)
        entry["time"] = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    event, source, version, offset_ms = SAGA[3]
    after = ORDERS.apply(document, envelope(event, source, version, offset_ms), event)
    assert [e["event_id"] for e in after["timeline"]] == [
        e["event_id"] for e in (project(SAGA[:4]) or {})["timeline"]
    ]
