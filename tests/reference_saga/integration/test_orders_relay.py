"""The orders relay's own wiring (write_side/orders/relay.py) against a real broker, with
the event store on SQLite and on PostgreSQL: the orders' contract events on the orders
topic, and ORDERS_RELAY_ALSO_PUBLISH.

The relay's guarantees (every event in order with CloudEvents headers, the position only
after the acks, nothing lost when killed and restarted, the majors setting) are the
kernel's: tests/integration/test_relay.py asserts them on the kernel's tallies domain.
"""

import pytest

from contracts import orders as contract
from contracts.envelope import Envelope
from kernel.kafka import ensure_topics, stop_producer
from kernel.relay import Relay, build_relay
from tests.integration.kafka_reading import read_topic
from tests.reference_saga.stores import orders_settings
from write_side.orders.application import OrdersApplication
from write_side.orders.bootstrap import build_application
from write_side.orders.relay import to_contract
from write_side.orders.settings import OrdersSettings

ITEMS = [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}]
ADDRESS = {"street": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"}


def orders_relay(app: OrdersApplication, settings: OrdersSettings) -> Relay:
    """The relay as ``python -m write_side.orders.relay`` builds it."""
    return build_relay(
        app,
        settings,
        topic=contract.TOPIC,
        to_contract=to_contract,
        also_publish=settings.orders_relay_also_publish,
    )


def place_orders(app, count: int, cancel_every: int = 3) -> int:  # type: ignore[no-untyped-def]
    for i in range(count):
        saved = app.place_order(f"customer-{i % 5}", "restaurant-1", ADDRESS, ITEMS)
        if i % cancel_every == 0:
            app.approve_order(saved.order_id)
            app.cancel_order(saved.order_id, "changed my mind")
    return int(app.recorder.max_notification_id())


async def test_the_orders_relay_publishes_the_orders_contracts_and_the_v1_copy(kafka, store):
    settings = orders_settings(store, kafka_bootstrap_servers=kafka)
    app = build_application(settings)
    first = app.place_order("customer-1", "restaurant-1", ADDRESS, ITEMS)
    last = place_orders(app, 30)
    relay = orders_relay(app, settings)
    await ensure_topics(kafka, {"orders": 4})
    await relay.producer.start()
    try:
        await relay.publish_next_batch(0)
    finally:
        await relay.producer.stop()
    app.close()

    records = await read_topic(
        kafka,
        "orders",
        until=lambda records: (
            {Envelope.from_bytes(r.value).sequence for r in records} >= set(range(1, last + 1))
        ),
    )
    envelopes = [Envelope.from_bytes(r.value) for r in records]
    assert {e.sequence for e in envelopes} == set(range(1, last + 1))
    assert {e.type for e in envelopes} == {
        "orders.OrderCreated.v2",
        "orders.OrderCreated.v1",
        "orders.OrderApproved.v1",
        "orders.OrderCancelled.v1",
    }
    assert {dict(r.headers)["ce_source"] for r in records} == {b"orders"}

    [record, v1_record] = [r for r, e in zip(records, envelopes, strict=True) if e.sequence == 1]
    created = Envelope.from_bytes(record.value)
    assert created.type == "orders.OrderCreated.v2"
    assert created.subject == str(first.order_id)
    assert created.data["total_cents"] == 2500
    # The transition period (ORDERS_RELAY_ALSO_PUBLISH): the v1 copy follows, as one event.
    v1 = Envelope.from_bytes(v1_record.value)
    assert dict(v1_record.headers)["ce_type"] == b"orders.OrderCreated.v1"
    assert (v1.type, v1.id, v1.aggregateversion) == ("orders.OrderCreated.v1", created.id, 1)
    assert v1.data["delivery_address"] == "1 Main St, 12345 Springfield, US"
    assert sum(e.type == "orders.OrderCreated.v1" for e in envelopes) == 31


@pytest.mark.parametrize(
    ("also_publish", "created_types"),
    [
        (None, ["orders.OrderCreated.v2", "orders.OrderCreated.v1"]),  # the default
        (frozenset(), ["orders.OrderCreated.v2"]),  # after the transition
    ],
    ids=["transition", "after-transition"],
)
async def test_the_setting_decides_which_majors_the_orders_relay_publishes(
    store, also_publish, created_types
):
    overrides = {} if also_publish is None else {"orders_relay_also_publish": also_publish}
    settings = orders_settings(store, **overrides)
    app = build_application(settings)
    saved = app.place_order("customer-1", "restaurant-1", ADDRESS, ITEMS)
    app.approve_order(saved.order_id)
    relay = orders_relay(app, settings)  # the producer is not started: nothing is sent
    try:
        notifications = app.recorder.select_notifications(1, 10)
        published = [[e.type for e in relay.encoder.envelopes(n)] for n in notifications]
    finally:
        await stop_producer(relay.producer, timeout=1)
        app.close()

    assert published == [created_types, ["orders.OrderApproved.v1"]]
