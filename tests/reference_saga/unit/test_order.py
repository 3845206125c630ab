"""Specifications of the Order aggregate: given its events, when a command, then events.

Pure domain code, no server (kernel.testing's given-when-then). The last part drives
the same rules through OrdersApplication on eventsourcing's in-memory (POPO) store.
"""

from uuid import uuid4

import pytest

from kernel.errors import DomainError, NotFound
from kernel.testing import fact, given
from tests.reference_saga.examples import PLACE_ORDER
from write_side.orders.application import OrdersApplication
from write_side.orders.domain import LineItem, Order, OrderState

PLACE = PLACE_ORDER
TOTAL = 2 * 1250 + 3 * 300

PLACED = fact(Order.Placed, **PLACE)
APPROVED = fact(Order.Approved)
REJECTED = fact(Order.Rejected, reason="card declined", failed_step="accounting")
CANCELLED = fact(Order.Cancelled, reason="changed my mind")


def place(_: None) -> Order:
    return Order(**PLACE)


def approve(order: Order) -> None:
    order.approve()


def reject(order: Order) -> None:
    order.reject("card declined", "accounting")


def cancel(order: Order) -> None:
    order.cancel("changed my mind")


# Place


def test_when_placed_then_placed_event_with_the_order_fields():
    given().when(place).then(PLACED)


def test_when_placed_then_pending_approval_with_its_total():
    order = given().when(place).then(PLACED)

    assert order.state is OrderState.APPROVAL_PENDING
    assert order.version == 1
    assert order.line_items == [LineItem("pizza", 2, 1250), LineItem("soda", 3, 300)]
    assert order.total_cents == TOTAL
    assert order.rejection_reason is None
    assert order.cancellation_reason is None


def test_when_placed_without_line_items_then_domain_error():
    given().when(lambda _: Order(**{**PLACE, "line_items": []})).then_error(
        DomainError, "an order needs at least one line item"
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"menu_item_id": "pizza", "quantity": 0, "unit_price_cents": 1250},
            "quantity of pizza must be positive",
        ),
        (
            {"menu_item_id": "pizza", "quantity": 1, "unit_price_cents": -1},
            "price of pizza must be positive",
        ),
    ],
    ids=["quantity", "price"],
)
def test_when_placed_with_a_non_positive_quantity_or_price_then_domain_error(item, message):
    given().when(lambda _: Order(**{**PLACE, "line_items": [item]})).then_error(
        DomainError, message
    )


# Allowed transitions


def test_given_a_pending_order_when_approved_then_approved_event():
    order = given(PLACED).when(approve).then(APPROVED)

    assert order.state is OrderState.APPROVED


def test_given_a_pending_order_when_rejected_then_rejected_event_with_the_reason():
    order = given(PLACED).when(reject).then(REJECTED)

    assert order.state is OrderState.REJECTED
    assert order.rejection_reason == "card declined"


@pytest.mark.parametrize(
    ("history", "command"),
    [
        pytest.param([APPROVED], approve, id="approve twice"),
        pytest.param([REJECTED], reject, id="reject twice"),
    ],
)
def test_given_a_saga_outcome_when_it_arrives_again_then_nothing_happens(history, command):
    # the saga's message delivered twice: no event, and (checked by then) no change
    given(PLACED, *history).when(command).then()


def test_given_an_approved_order_when_cancelled_then_cancelled_event():
    order = given(PLACED, APPROVED).when(cancel).then(CANCELLED)

    assert order.state is OrderState.CANCELLED


# Forbidden transitions: a DomainError, no event, nothing changes (then_error checks all three)

SAGA_IN_PROGRESS = (
    "the createOrder saga is still in progress for this order; cancel it once it is approved"
)
FORBIDDEN = [
    ("pending", [], cancel, SAGA_IN_PROGRESS),
    ("rejected", [REJECTED], approve, "cannot approve an order that is REJECTED"),
    ("cancelled", [APPROVED, CANCELLED], approve, "cannot approve an order that is CANCELLED"),
    ("approved", [APPROVED], reject, "cannot reject an order that is APPROVED"),
    ("cancelled", [APPROVED, CANCELLED], reject, "cannot reject an order that is CANCELLED"),
    ("rejected", [REJECTED], cancel, "cannot cancel an order that is REJECTED"),
    ("cancelled", [APPROVED, CANCELLED], cancel, "cannot cancel an order that is CANCELLED"),
]


@pytest.mark.parametrize(
    ("history", "command", "message"),
    [pytest.param(h, c, m, id=f"given {s} when {c.__name__}") for s, h, c, m in FORBIDDEN],
)
def test_given_an_order_when_a_forbidden_command_then_domain_error_and_no_event(
    history, command, message
):
    given(PLACED, *history).when(command).then_error(DomainError, message)


# Reconstruction


def test_given_its_events_when_replayed_then_the_same_order():
    order = Order(**PLACE)
    order.approve()
    order.cancel("changed my mind")
    events = order.collect_events()

    replayed = None
    for domain_event in events:
        replayed = domain_event.mutate(replayed)

    assert isinstance(replayed, Order)
    assert replayed.id == order.id
    assert replayed.version == 3
    assert replayed.state is OrderState.CANCELLED
    assert replayed.cancellation_reason == "changed my mind"
    assert replayed.line_items == order.line_items
    assert replayed.total_cents == TOTAL


# The application's commands, on the in-memory store


@pytest.fixture
def app():
    application = OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield application
    application.close()


def test_place_order_saves_the_placed_event(app):
    saved = app.place_order(**PLACE)

    assert (saved.version, saved.position) == (1, 1)
    order = app.get_order(saved.order_id)
    assert order.state is OrderState.APPROVAL_PENDING
    assert order.total_cents == TOTAL


def test_approve_order_then_cancel_order_reload_from_the_store(app):
    order_id = app.place_order(**PLACE).order_id

    app.approve_order(order_id)
    cancelled = app.cancel_order(order_id, "changed my mind")

    assert (cancelled.version, cancelled.position) == (3, 3)
    order = app.get_order(order_id)
    assert (order.state, order.version) == (OrderState.CANCELLED, 3)
    assert order.cancellation_reason == "changed my mind"
    assert app.repository.get(order_id, version=2).state is OrderState.APPROVED


def test_reject_order_saves_the_reason(app):
    order_id = app.place_order(**PLACE).order_id

    app.reject_order(order_id, "card declined", "accounting")

    order = app.get_order(order_id)
    assert (order.state, order.rejection_reason) == (OrderState.REJECTED, "card declined")


def test_a_forbidden_command_stores_nothing(app):
    order_id = app.place_order(**PLACE).order_id
    app.reject_order(order_id, "card declined", "accounting")

    with pytest.raises(DomainError):
        app.approve_order(order_id)
    with pytest.raises(DomainError):
        app.cancel_order(order_id, "too late")

    assert app.recorder.max_notification_id() == 2


def test_an_invalid_order_stores_nothing(app):
    with pytest.raises(DomainError):
        app.place_order(**{**PLACE, "line_items": []})

    assert app.recorder.max_notification_id() is None


@pytest.mark.parametrize(
    "command",
    [
        lambda app, order_id: app.get_order(order_id),
        lambda app, order_id: app.approve_order(order_id),
        lambda app, order_id: app.reject_order(order_id, "no", "kitchen"),
        lambda app, order_id: app.cancel_order(order_id, "no"),
    ],
    ids=["get", "approve", "reject", "cancel"],
)
def test_an_unknown_order_is_not_found(app, command):
    order_id = uuid4()

    with pytest.raises(NotFound, match=str(order_id)):
        command(app, order_id)
