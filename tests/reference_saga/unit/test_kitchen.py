"""Specifications of the Restaurant and Ticket aggregates: given events, when a command,
then events.

Pure domain code, no server (kernel.testing's given-when-then). The last part drives the
same rules through KitchenApplication on eventsourcing's in-memory (POPO) store.
"""

from uuid import UUID, uuid4, uuid5

import pytest

from kernel.errors import DomainError, NotFound
from kernel.testing import fact, given
from write_side.kitchen.application import KitchenApplication
from write_side.kitchen.domain import (
    RESTAURANT_NAMESPACE,
    Restaurant,
    Ticket,
    TicketState,
    restaurant_uuid,
)

MENU = ["pizza", "soda"]
PIZZA = {"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}
SODA = {"menu_item_id": "soda", "quantity": 3, "unit_price_cents": 300}
SUSHI = {"menu_item_id": "sushi", "quantity": 1, "unit_price_cents": 900}
RAMEN = {"menu_item_id": "ramen", "quantity": 1, "unit_price_cents": 800}
TOTAL = 2 * 1250 + 3 * 300


# Restaurant

REGISTERED = fact(Restaurant.Registered, restaurant_id="rest-1", name="Pizzeria", menu=MENU)
CLOSED = fact(Restaurant.Closed)
OPENED = fact(Restaurant.Opened)


def close(restaurant: Restaurant) -> None:
    restaurant.close()


def reopen(restaurant: Restaurant) -> None:
    restaurant.open()


def test_when_registered_then_registered_event_and_open():
    restaurant = given().when(lambda _: Restaurant("rest-1", "Pizzeria", MENU)).then(REGISTERED)

    assert restaurant.is_open is True
    assert (restaurant.restaurant_id, restaurant.name, restaurant.menu) == (
        "rest-1",
        "Pizzeria",
        MENU,
    )


def test_the_restaurant_id_is_derived_from_its_string_id():
    first = Restaurant("rest-1", "Pizzeria", MENU)
    again = Restaurant("rest-1", "Another name", ["soup"])
    other = Restaurant("rest-2", "Pizzeria", MENU)

    assert (
        first.id == again.id == uuid5(RESTAURANT_NAMESPACE, "rest-1") == restaurant_uuid("rest-1")
    )
    assert other.id != first.id


@pytest.mark.parametrize(
    ("name", "menu", "message"),
    [
        ("Pizzeria", [], "a menu needs at least one item"),
        ("Pizzeria", ["pizza", "soda", "pizza"], "menu items listed twice: pizza"),
        ("Pizzeria", ["pizza", ""], "menu item ids must be non-empty strings"),
        ("  ", MENU, "a restaurant needs a name"),
    ],
    ids=["empty menu", "duplicate item", "empty item", "blank name"],
)
def test_when_registered_with_an_invalid_menu_or_name_then_domain_error(name, menu, message):
    given().when(lambda _: Restaurant("rest-1", name, menu)).then_error(DomainError, message)


def test_given_an_open_restaurant_when_closed_then_closed_event():
    restaurant = given(REGISTERED).when(close).then(CLOSED)

    assert restaurant.is_open is False


def test_given_a_closed_restaurant_when_opened_then_opened_event():
    restaurant = given(REGISTERED, CLOSED).when(reopen).then(OPENED)

    assert restaurant.is_open is True


@pytest.mark.parametrize(
    ("history", "command"),
    [([], reopen), ([CLOSED], close)],
    ids=["open an open restaurant", "close a closed restaurant"],
)
def test_when_the_restaurant_is_already_in_that_state_then_no_event(history, command):
    given(REGISTERED, *history).when(command).then()  # and (then checks) no change


def test_when_the_menu_is_set_then_menu_changed_event():
    restaurant = (
        given(REGISTERED)
        .when(lambda restaurant: restaurant.set_menu(["sushi", "ramen"]))
        .then(fact(Restaurant.MenuChanged, menu=["sushi", "ramen"]))
    )

    assert restaurant.menu == ["sushi", "ramen"]


def test_when_the_same_menu_is_set_then_no_event():
    restaurant = given(REGISTERED).when(lambda restaurant: restaurant.set_menu(list(MENU))).then()

    assert restaurant.version == 1


@pytest.mark.parametrize(
    ("menu", "message"),
    [([], "a menu needs at least one item"), (["a", "a"], "menu items listed twice: a")],
)
def test_when_an_invalid_menu_is_set_then_domain_error_and_no_event(menu, message):
    restaurant = (
        given(REGISTERED)
        .when(lambda restaurant: restaurant.set_menu(menu))
        .then_error(DomainError, message)
    )

    assert restaurant.menu == MENU


def test_given_an_open_restaurant_with_every_item_then_no_refusal():
    assert given(REGISTERED).aggregate.refusal_for([PIZZA, SODA]) is None


def test_given_a_closed_restaurant_then_it_refuses_as_closed():
    restaurant = given(REGISTERED, CLOSED).aggregate

    assert restaurant.refusal_for([PIZZA]) == "restaurant rest-1 is closed"
    assert restaurant.refusal_for([SUSHI]) == "restaurant rest-1 is closed"


def test_given_an_item_off_the_menu_then_it_refuses_naming_it():
    restaurant = given(REGISTERED).aggregate

    assert restaurant.refusal_for([PIZZA, SUSHI]) == "not on the menu of rest-1: sushi"


def test_given_several_items_off_the_menu_then_each_is_named_once_in_order():
    restaurant = given(REGISTERED).aggregate

    refusal = restaurant.refusal_for([SUSHI, PIZZA, RAMEN, SUSHI])

    assert refusal == "not on the menu of rest-1: sushi, ramen"


def test_given_a_changed_menu_then_refusals_follow_the_new_menu():
    restaurant = given(REGISTERED, fact(Restaurant.MenuChanged, menu=["sushi"])).aggregate

    assert restaurant.refusal_for([SUSHI]) is None
    assert restaurant.refusal_for([PIZZA]) == "not on the menu of rest-1: pizza"


def test_given_its_events_when_replayed_then_the_same_restaurant():
    restaurant = Restaurant("rest-1", "Pizzeria", MENU)
    restaurant.close()
    restaurant.set_menu(["sushi"])
    events = restaurant.collect_events()

    replayed = None
    for domain_event in events:
        replayed = domain_event.mutate(replayed)

    assert isinstance(replayed, Restaurant)
    assert (replayed.id, replayed.version) == (restaurant.id, 3)
    assert (replayed.restaurant_id, replayed.name) == ("rest-1", "Pizzeria")
    assert (replayed.is_open, replayed.menu) == (False, ["sushi"])


# Ticket

ORDER_ID = UUID("5b3c1a52-8f1f-4a8e-9a9e-2d3c4b5a6f70")

CREATED = fact(
    Ticket.Created,
    originator_id=ORDER_ID,
    restaurant_id="rest-1",
    consumer_id="consumer-1",
    line_items=[PIZZA, SODA],
    total_cents=TOTAL,
)
REJECTED = fact(
    Ticket.Rejected,
    originator_id=ORDER_ID,
    restaurant_id="rest-1",
    reason="restaurant rest-1 is closed",
)
APPROVED = fact(Ticket.Approved, restaurant_id="rest-1")
CANCELLED = fact(Ticket.Cancelled, restaurant_id="rest-1", reason="card declined")


def approve(ticket: Ticket) -> None:
    ticket.approve()


def cancel(ticket: Ticket) -> None:
    ticket.cancel("card declined")


def pending(_: None = None) -> Ticket:
    return Ticket.create(ORDER_ID, "rest-1", "consumer-1", [PIZZA, SODA], TOTAL)


def rejected(_: None = None) -> Ticket:
    return Ticket.reject(ORDER_ID, "rest-1", "restaurant rest-1 is closed")


def test_when_created_then_created_event_and_create_pending():
    ticket = given().when(pending).then(CREATED)

    assert ticket.state is TicketState.CREATE_PENDING
    assert ticket.id == ticket.order_id == ORDER_ID
    assert (ticket.restaurant_id, ticket.consumer_id) == ("rest-1", "consumer-1")
    assert (ticket.line_items, ticket.total_cents, ticket.reason) == ([PIZZA, SODA], TOTAL, None)


def test_when_rejected_then_rejected_event_with_the_reason():
    ticket = given().when(rejected).then(REJECTED)

    assert ticket.state is TicketState.REJECTED
    assert ticket.reason == "restaurant rest-1 is closed"
    assert (ticket.consumer_id, ticket.line_items, ticket.total_cents) == (None, [], 0)


@pytest.mark.parametrize(
    ("line_items", "total", "message"),
    [
        ([], TOTAL, "a ticket needs at least one line item"),
        ([PIZZA], 0, "a ticket's total must be positive"),
    ],
)
def test_when_created_without_items_or_total_then_domain_error(line_items, total, message):
    given().when(
        lambda _: Ticket.create(ORDER_ID, "rest-1", "consumer-1", line_items, total)
    ).then_error(DomainError, message)


def test_when_rejected_without_a_reason_then_domain_error():
    given().when(lambda _: Ticket.reject(ORDER_ID, "rest-1", "")).then_error(
        DomainError, "a rejected ticket needs a reason"
    )


def test_given_a_pending_ticket_when_approved_then_approved_event():
    ticket = given(CREATED).when(approve).then(APPROVED)

    assert ticket.state is TicketState.AWAITING_ACCEPTANCE
    assert ticket.reason is None


def test_given_a_pending_ticket_when_cancelled_then_cancelled_event_with_the_reason():
    ticket = given(CREATED).when(cancel).then(CANCELLED)

    assert ticket.state is TicketState.CANCELLED
    assert ticket.reason == "card declined"


def test_given_an_approved_ticket_when_approved_again_then_no_event():
    ticket = given(CREATED, APPROVED).when(approve).then()

    assert (ticket.state, ticket.version) == (TicketState.AWAITING_ACCEPTANCE, 2)


def test_given_a_cancelled_ticket_when_cancelled_again_then_no_event_and_the_first_reason():
    ticket = given(CREATED, CANCELLED).when(lambda ticket: ticket.cancel("another reason")).then()

    assert (ticket.state, ticket.version) == (TicketState.CANCELLED, 2)
    assert ticket.reason == "card declined"


FORBIDDEN = [
    ("cancelled", [CREATED, CANCELLED], approve, "cannot approve a ticket that is CANCELLED"),
    ("rejected", [REJECTED], approve, "cannot approve a ticket that is REJECTED"),
    (
        "approved",
        [CREATED, APPROVED],
        cancel,
        "cannot cancel a ticket that is AWAITING_ACCEPTANCE",
    ),
    ("rejected", [REJECTED], cancel, "cannot cancel a ticket that is REJECTED"),
]


@pytest.mark.parametrize(
    ("history", "command", "message"),
    [pytest.param(h, c, m, id=f"given {s} when {c.__name__}") for s, h, c, m in FORBIDDEN],
)
def test_given_a_ticket_when_a_forbidden_command_then_domain_error_and_no_event(
    history, command, message
):
    given(*history).when(command).then_error(DomainError, message)


@pytest.mark.parametrize(
    ("born", "history", "state", "reason"),
    [
        (pending, [approve], TicketState.AWAITING_ACCEPTANCE, None),
        (pending, [cancel], TicketState.CANCELLED, "card declined"),
        (rejected, [], TicketState.REJECTED, "restaurant rest-1 is closed"),
    ],
    ids=["approved", "cancelled", "rejected"],
)
def test_given_its_events_when_replayed_then_the_same_ticket(born, history, state, reason):
    ticket = born()
    for command in history:
        command(ticket)
    events = ticket.collect_events()

    replayed = None
    for domain_event in events:
        replayed = domain_event.mutate(replayed)

    assert isinstance(replayed, Ticket)
    assert (replayed.id, replayed.version) == (ORDER_ID, ticket.version)
    assert (replayed.state, replayed.reason, replayed.restaurant_id) == (state, reason, "rest-1")
    assert (replayed.consumer_id, replayed.line_items, replayed.total_cents) == (
        ticket.consumer_id,
        ticket.line_items,
        ticket.total_cents,
    )


# The application's commands, on the in-memory store


@pytest.fixture
def app():
    application = KitchenApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    application.register_restaurant("rest-1", "Pizzeria", MENU)
    yield application
    application.close()


def stored(app: KitchenApplication) -> int | None:
    return app.recorder.max_notification_id()


def create(app: KitchenApplication, order_id: UUID, restaurant_id="rest-1", items=None) -> Ticket:
    """Run the create_ticket command; the ticket it saved."""
    app.create_ticket(order_id, restaurant_id, "consumer-1", items or [PIZZA, SODA], TOTAL)
    return app.get_ticket(order_id)


def test_register_restaurant_saves_it_open(app):
    saved = app.register_restaurant("rest-2", "Sushi bar", ["sushi"])

    assert (saved.restaurant_id, saved.version, saved.position) == ("rest-2", 1, 2)
    restaurant = app.get_restaurant("rest-2")
    assert (restaurant.name, restaurant.menu, restaurant.is_open) == ("Sushi bar", ["sushi"], True)


def test_registering_a_restaurant_twice_is_a_domain_error_and_stores_nothing(app):
    with pytest.raises(DomainError, match="^restaurant rest-1 is already registered$"):
        app.register_restaurant("rest-1", "Another", ["soup"])

    assert stored(app) == 1
    assert app.get_restaurant("rest-1").name == "Pizzeria"


def test_close_open_and_set_menu_reload_from_the_store(app):
    closed = app.close_restaurant("rest-1")
    menu = app.set_menu("rest-1", ["sushi"])
    opened = app.open_restaurant("rest-1")

    assert [(s.version, s.position) for s in (closed, menu, opened)] == [(2, 2), (3, 3), (4, 4)]
    restaurant = app.get_restaurant("rest-1")
    assert (restaurant.is_open, restaurant.menu, restaurant.version) == (True, ["sushi"], 4)


def test_a_command_that_changes_nothing_stores_nothing_and_has_no_position(app):
    opened = app.open_restaurant("rest-1")
    same_menu = app.set_menu("rest-1", MENU)

    assert (opened.version, opened.position) == (1, None)
    assert (same_menu.version, same_menu.position) == (1, None)
    assert stored(app) == 1


@pytest.mark.parametrize(
    "command",
    [
        lambda app: app.get_restaurant("rest-9"),
        lambda app: app.open_restaurant("rest-9"),
        lambda app: app.close_restaurant("rest-9"),
        lambda app: app.set_menu("rest-9", MENU),
    ],
    ids=["get", "open", "close", "set menu"],
)
def test_an_unknown_restaurant_is_not_found(app, command):
    with pytest.raises(NotFound, match="^restaurant rest-9 not found$"):
        command(app)


def test_create_ticket_makes_a_pending_ticket(app):
    order_id = uuid4()

    saved = create(app, order_id)

    assert (saved.state, saved.version, saved.total_cents) == (TicketState.CREATE_PENDING, 1, TOTAL)


@pytest.mark.parametrize(
    ("prepare", "restaurant_id", "items", "reason"),
    [
        (lambda app: None, "rest-9", [PIZZA], "unknown restaurant rest-9"),
        (
            lambda app: app.close_restaurant("rest-1"),
            "rest-1",
            [PIZZA],
            "restaurant rest-1 is closed",
        ),
        (lambda app: None, "rest-1", [PIZZA, SUSHI], "not on the menu of rest-1: sushi"),
    ],
    ids=["unknown restaurant", "closed", "not on the menu"],
)
def test_create_ticket_makes_a_rejected_ticket_with_the_reason(
    app, prepare, restaurant_id, items, reason
):
    prepare(app)
    order_id = uuid4()

    ticket = create(app, order_id, restaurant_id, items)

    assert (ticket.id, ticket.state, ticket.reason) == (order_id, TicketState.REJECTED, reason)
    assert ticket.restaurant_id == restaurant_id


def test_create_ticket_for_an_order_that_has_one_saves_nothing(app):
    order_id = uuid4()
    create(app, order_id)

    app.create_ticket(order_id, "rest-1", "consumer-1", [PIZZA], TOTAL)
    app.reject_ticket(order_id, "rest-1", "boom")

    assert stored(app) == 2
    assert app.get_ticket(order_id).state is TicketState.CREATE_PENDING


def test_reject_ticket_makes_a_rejected_ticket(app):
    order_id = uuid4()

    app.reject_ticket(order_id, "rest-1", "boom")

    ticket = app.get_ticket(order_id)

    assert (ticket.id, ticket.state, ticket.reason) == (order_id, TicketState.REJECTED, "boom")


def test_approve_and_cancel_ticket_save_the_ticket(app):
    approved_id, cancelled_id = uuid4(), uuid4()
    create(app, approved_id)
    create(app, cancelled_id)

    app.approve_ticket(approved_id)
    app.cancel_ticket(cancelled_id, "card declined")

    assert app.get_ticket(approved_id).state is TicketState.AWAITING_ACCEPTANCE
    cancelled = app.get_ticket(cancelled_id)
    assert (cancelled.state, cancelled.reason) == (TicketState.CANCELLED, "card declined")


@pytest.mark.parametrize(
    "command",
    [
        lambda app, order_id: app.get_ticket(order_id),
        lambda app, order_id: app.approve_ticket(order_id),
        lambda app, order_id: app.cancel_ticket(order_id, "card declined"),
    ],
    ids=["get", "approve", "cancel"],
)
def test_a_missing_ticket_is_not_found(app, command):
    order_id = uuid4()

    with pytest.raises(NotFound, match=f"^ticket for order {order_id} not found$"):
        command(app, order_id)


def test_a_restaurant_is_not_found_as_a_ticket(app):
    with pytest.raises(NotFound):
        app.get_ticket(restaurant_uuid("rest-1"))
