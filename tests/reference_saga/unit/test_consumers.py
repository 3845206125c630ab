"""Specifications of the Consumer and Verification aggregates: given events, when a command,
then events.

Pure domain code, no server (kernel.testing's given-when-then). The last part drives the
same rules through ConsumersApplication on eventsourcing's in-memory (POPO) store.
"""

from uuid import UUID, uuid4, uuid5

import pytest
from eventsourcing.persistence import IntegrityError

from contracts import consumers as contract
from contracts.orders import LineItem
from kernel.errors import DomainError, NotFound
from kernel.testing import fact, given
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.domain import NAMESPACE, Consumer, Verification
from write_side.consumers.relay import to_contract

ITEMS = [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}]
TOTAL = 2500

REGISTERED = fact(Consumer.Registered, consumer_id="cust-1", name="Ann")
DEACTIVATED = fact(Consumer.Deactivated, reason="unpaid bills")
REACTIVATED = fact(Consumer.Reactivated)


def deactivate(consumer: Consumer) -> None:
    consumer.deactivate("unpaid bills")


def reactivate(consumer: Consumer) -> None:
    consumer.reactivate()


# Consumer


def test_when_registered_then_registered_event_and_an_active_consumer():
    consumer = given().when(lambda _: Consumer(consumer_id="cust-1", name="Ann")).then(REGISTERED)

    assert consumer.active and consumer.may_order()
    assert consumer.deactivation_reason is None


def test_the_consumer_id_derives_from_the_consumer_s_own_id():
    consumer = Consumer(consumer_id="cust-1", name="Ann")

    assert consumer.id == Consumer.create_id("cust-1") == uuid5(NAMESPACE, "cust-1")
    assert Consumer.create_id("cust-2") != consumer.id


@pytest.mark.parametrize(
    ("consumer_id", "name", "message"),
    [("", "Ann", "a consumer needs an id"), ("cust-1", "", "a consumer needs a name")],
)
def test_when_registered_without_id_or_name_then_domain_error(consumer_id, name, message):
    given().when(lambda _: Consumer(consumer_id=consumer_id, name=name)).then_error(
        DomainError, message
    )


def test_given_an_active_consumer_when_deactivated_then_deactivated_event_and_may_not_order():
    consumer = given(REGISTERED).when(deactivate).then(DEACTIVATED)

    assert not consumer.active
    assert not consumer.may_order()
    assert consumer.deactivation_reason == "unpaid bills"


def test_given_a_deactivated_consumer_when_reactivated_then_reactivated_event_and_may_order():
    consumer = given(REGISTERED, DEACTIVATED).when(reactivate).then(REACTIVATED)

    assert consumer.active and consumer.may_order()
    assert consumer.deactivation_reason is None


@pytest.mark.parametrize(
    ("history", "command", "message"),
    [
        ([DEACTIVATED], deactivate, "consumer cust-1 is already deactivated"),
        ([], reactivate, "consumer cust-1 is already active"),
        ([DEACTIVATED, REACTIVATED], reactivate, "consumer cust-1 is already active"),
    ],
    ids=["deactivate twice", "reactivate an active one", "reactivate twice"],
)
def test_when_a_forbidden_command_then_domain_error_and_no_event(history, command, message):
    given(REGISTERED, *history).when(command).then_error(DomainError, message)


def test_given_its_events_when_replayed_then_the_same_consumer():
    consumer = Consumer(consumer_id="cust-1", name="Ann")
    consumer.deactivate("unpaid bills")
    events = consumer.collect_events()

    replayed = None
    for domain_event in events:
        replayed = domain_event.mutate(replayed)

    assert isinstance(replayed, Consumer)
    assert (replayed.id, replayed.version, replayed.name) == (consumer.id, 2, "Ann")
    assert not replayed.may_order()
    assert replayed.deactivation_reason == "unpaid bills"


# Verification


def test_when_verified_then_verified_event_with_what_the_kitchen_needs():
    order_id = str(uuid4())
    verified = fact(
        Verification.Verified,
        originator_id=UUID(order_id),
        order_id=order_id,
        consumer_id="cust-1",
        restaurant_id="restaurant-1",
        line_items=ITEMS,
        total_cents=TOTAL,
    )

    verification = (
        given()
        .when(lambda _: Verification.succeeded(order_id, "cust-1", "restaurant-1", ITEMS, TOTAL))
        .then(verified)
    )

    assert verification.verified and verification.reason is None


def test_when_failed_then_failed_event_with_the_reason():
    order_id = str(uuid4())
    reason = "consumer cust-9 is not registered"
    failed = fact(
        Verification.Failed,
        originator_id=UUID(order_id),
        order_id=order_id,
        consumer_id="cust-9",
        reason=reason,
    )

    verification = (
        given().when(lambda _: Verification.failed(order_id, "cust-9", reason)).then(failed)
    )

    assert not verification.verified
    assert verification.reason == reason


def test_a_verification_is_created_only_through_its_outcome():
    with pytest.raises(TypeError, match="created"):
        Verification(order_id=str(uuid4()), consumer_id="cust-1")


def test_a_replayed_failed_verification_keeps_its_outcome():
    verification = Verification.failed(str(uuid4()), "cust-9", "not registered")
    [failed] = verification.collect_events()

    replayed = failed.mutate(None)

    assert isinstance(replayed, Verification)
    assert (replayed.verified, replayed.reason) == (False, "not registered")


# The relay's mapping


def test_verified_maps_to_consumer_verified():
    order_id = str(uuid4())
    [verified] = Verification.succeeded(
        order_id, "cust-1", "restaurant-1", ITEMS, TOTAL
    ).collect_events()

    assert to_contract(verified) == contract.ConsumerVerified(
        order_id=order_id,
        consumer_id="cust-1",
        restaurant_id="restaurant-1",
        line_items=[LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250)],
        total_cents=TOTAL,
    )


def test_failed_maps_to_consumer_verification_failed():
    order_id = str(uuid4())
    [failed] = Verification.failed(order_id, "cust-9", "not registered").collect_events()

    assert to_contract(failed) == contract.ConsumerVerificationFailed(
        order_id=order_id, consumer_id="cust-9", reason="not registered"
    )


def test_the_consumer_s_own_events_stay_private():
    consumer = Consumer(consumer_id="cust-1", name="Ann")
    consumer.deactivate("unpaid bills")
    consumer.reactivate()

    assert [to_contract(e) for e in consumer.collect_events()] == [None, None, None]


# The application's commands, on the in-memory store


@pytest.fixture
def app():
    application = ConsumersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield application
    application.close()


def verify(app: ConsumersApplication, order_id: str, consumer_id: str = "cust-1") -> Verification:
    """Run the verify command; the Verification it saved."""
    app.verify(order_id, consumer_id, "restaurant-1", ITEMS, TOTAL)
    return app.get_verification(order_id)


def test_register_then_deactivate_then_reactivate_reload_from_the_store(app):
    app.register_consumer("cust-1", "Ann")
    app.deactivate_consumer("cust-1", "unpaid bills")
    assert not app.get_consumer("cust-1").may_order()

    app.reactivate_consumer("cust-1")

    consumer = app.get_consumer("cust-1")
    assert (consumer.name, consumer.active, consumer.version) == ("Ann", True, 3)
    assert app.recorder.max_notification_id() == 3


def test_registering_twice_is_a_domain_error_and_stores_nothing(app):
    app.register_consumer("cust-1", "Ann")

    with pytest.raises(DomainError, match="^consumer cust-1 is already registered$"):
        app.register_consumer("cust-1", "Bob")

    assert app.recorder.max_notification_id() == 1
    assert app.get_consumer("cust-1").name == "Ann"


@pytest.mark.parametrize(
    "command",
    [
        lambda app: app.get_consumer("cust-9"),
        lambda app: app.deactivate_consumer("cust-9", "no"),
        lambda app: app.reactivate_consumer("cust-9"),
    ],
    ids=["get", "deactivate", "reactivate"],
)
def test_an_unknown_consumer_is_not_found(app, command):
    with pytest.raises(NotFound, match="^consumer cust-9 not found$"):
        command(app)
    assert app.recorder.max_notification_id() is None


def test_given_an_active_consumer_when_verified_then_a_verified_verification(app):
    app.register_consumer("cust-1", "Ann")
    order_id = str(uuid4())

    verification = verify(app, order_id)

    assert verification.verified
    assert str(verification.id) == order_id
    assert app.recorder.max_notification_id() == 2


def test_given_an_unknown_consumer_when_verified_then_failed_not_registered(app):
    verification = verify(app, str(uuid4()), "cust-9")

    assert not verification.verified
    assert verification.reason == "consumer cust-9 is not registered"


def test_given_a_deactivated_consumer_when_verified_then_failed_with_the_reason(app):
    app.register_consumer("cust-1", "Ann")
    app.deactivate_consumer("cust-1", "unpaid bills")

    verification = verify(app, str(uuid4()))

    assert not verification.verified
    assert verification.reason == "consumer cust-1 is deactivated: unpaid bills"


def test_given_a_reactivated_consumer_when_verified_then_verified(app):
    app.register_consumer("cust-1", "Ann")
    app.deactivate_consumer("cust-1", "unpaid bills")
    app.reactivate_consumer("cust-1")

    verification = verify(app, str(uuid4()))

    assert verification.verified


def test_given_a_saved_verification_when_verified_again_then_nothing_is_saved(app):
    app.register_consumer("cust-1", "Ann")
    order_id = str(uuid4())
    verify(app, order_id)

    app.verify(order_id, "cust-1", "restaurant-1", ITEMS, TOTAL)
    app.fail_verification(order_id, "cust-1", "boom")

    assert app.get_verification(order_id).verified
    assert app.recorder.max_notification_id() == 2


def test_given_a_saved_verification_when_another_is_saved_for_the_order_then_it_collides(app):
    order_id = str(uuid4())
    app.save(Verification.failed(order_id, "cust-9", "not registered"))

    with pytest.raises(IntegrityError):
        app.save(Verification.failed(order_id, "cust-9", "not registered"))
    assert app.recorder.max_notification_id() == 1


def test_fail_verification_saves_a_failed_verification_with_the_reason(app):
    order_id = str(uuid4())

    app.fail_verification(order_id, "cust-1", "RuntimeError: boom")

    verification = app.get_verification(order_id)
    assert (verification.verified, verification.reason) == (False, "RuntimeError: boom")
