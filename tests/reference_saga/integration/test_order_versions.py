"""Orders stored by the code of class_version 1 (a free-text delivery address) load with
today's Order (class_version 2), from their events and from their snapshots, on SQLite and
PostgreSQL.

``OrderV1`` is the Order aggregate as it was. It lived at ``write_side.orders.domain:Order``;
here it lives in this module, so what it stores is given that topic back before it is
inserted: the store then holds exactly what the old code wrote.
"""

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate, Snapshot, event
from eventsourcing.persistence import StoredEvent

from contracts import orders as contract
from kernel.store import event_store_env
from tests.stores import Store
from write_side.orders.application import OrdersApplication
from write_side.orders.domain import DeliveryAddress, LineItem, Order, OrderState
from write_side.orders.relay import to_contract

ITEMS = [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}]


class OrderV1(Aggregate):
    """The Order aggregate at class_version 1 (only what these tests use)."""

    class Placed(Aggregate.Created):
        customer_id: str
        restaurant_id: str
        delivery_address: str
        line_items: list[dict[str, Any]]

    class Approved(Aggregate.Event):
        pass

    @event(Placed)
    def __init__(
        self,
        customer_id: str,
        restaurant_id: str,
        delivery_address: str,
        line_items: list[dict[str, Any]],
    ) -> None:
        self.customer_id = customer_id
        self.restaurant_id = restaurant_id
        self.delivery_address = delivery_address
        self.line_items = [LineItem(**item) for item in line_items]
        self.state = OrderState.APPROVAL_PENDING
        self.rejection_reason: str | None = None
        self.failed_step: str | None = None
        self.cancellation_reason: str | None = None

    def approve(self) -> None:
        self._approved()

    @event(Approved)
    def _approved(self) -> None:
        self.state = OrderState.APPROVED


OLD_TOPIC = f"{__name__}:OrderV1"
REAL_TOPIC = "write_side.orders.domain:Order"


def as_the_v1_code_stored_it(stored: StoredEvent) -> StoredEvent:
    return StoredEvent(
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic.replace(OLD_TOPIC, REAL_TOPIC),
        state=stored.state.replace(OLD_TOPIC.encode(), REAL_TOPIC.encode()),
    )


@pytest.fixture
def app(store: Store) -> Iterator[OrdersApplication]:
    env = {**event_store_env(store.url("orders"), store.schema), "IS_SNAPSHOTTING_ENABLED": "y"}
    application = OrdersApplication(env=env)
    yield application
    application.close()


def place_v1_order(app: OrdersApplication, address: str, *, snapshot: bool) -> UUID:
    """An approved order, written by the v1 code: two events, and a snapshot if asked."""
    old = OrderV1("cust-1", "rest-1", address, ITEMS)
    old.approve()
    stored = [app.mapper.to_stored_event(e) for e in old.collect_events()]
    app.recorder.insert_events([as_the_v1_code_stored_it(s) for s in stored])
    if snapshot:
        assert app.snapshots is not None
        taken = app.mapper.to_stored_event(Snapshot.take(old))
        app.snapshots.recorder.insert_events([as_the_v1_code_stored_it(taken)])
    return old.id


def test_v1_events_load_with_the_address_as_its_street(app: OrdersApplication) -> None:
    order_id = place_v1_order(app, "1 Main St, Springfield", snapshot=False)

    order = app.get_order(order_id)

    assert order.delivery_address == DeliveryAddress(street="1 Main St, Springfield")
    assert (order.version, order.state, order.total_cents) == (2, OrderState.APPROVED, 2500)


def test_a_v1_snapshot_loads_upcast(app: OrdersApplication) -> None:
    order_id = place_v1_order(app, "Flat 2, 7 Elm Road", snapshot=True)
    assert app.snapshots is not None
    [snapshot] = app.snapshots.get(order_id)

    from_snapshot = snapshot.mutate(None)

    assert isinstance(from_snapshot, Order)
    assert from_snapshot.delivery_address == DeliveryAddress(street="Flat 2, 7 Elm Road")
    assert from_snapshot.state is OrderState.APPROVED
    assert from_snapshot.line_items == [LineItem("pizza", 2, 1250)]


def test_an_order_loaded_from_a_v1_snapshot_takes_new_commands_and_new_snapshots(
    app: OrdersApplication,
) -> None:
    order_id = place_v1_order(app, "Flat 2, 7 Elm Road", snapshot=True)

    app.cancel_order(order_id, "changed my mind")  # loads through the v1 snapshot
    app.take_snapshot(order_id)
    order = app.get_order(order_id)  # through the new (class_version 2) snapshot

    assert (order.version, order.state) == (3, OrderState.CANCELLED)
    assert order.delivery_address == DeliveryAddress(street="Flat 2, 7 Elm Road")


def test_a_v1_placed_event_maps_to_the_v2_contract(app: OrdersApplication) -> None:
    order_id = place_v1_order(app, "1 Main St", snapshot=False)
    [placed, _] = [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(1, 10)]

    created = to_contract(placed)

    assert isinstance(created, contract.OrderCreated)
    assert created.order_id == str(order_id)
    assert created.delivery_address == contract.DeliveryAddress(street="1 Main St")
