"""Specifications of the Account and Authorization aggregates: given events, when a command,
then events.

Pure domain code, no server (kernel.testing's given-when-then). The last part drives the
same rules through AccountingApplication on eventsourcing's in-memory (POPO) store.
"""

from uuid import UUID, uuid4, uuid5

import pytest
from eventsourcing.persistence import IntegrityError

from contracts import accounting as contract
from kernel.errors import DomainError, NotFound
from kernel.testing import Fact, fact, given
from write_side.accounting.application import AccountingApplication
from write_side.accounting.domain import NAMESPACE, Account, Authorization
from write_side.accounting.relay import to_contract

LIMIT = 10_000

OPENED = fact(Account.Opened, consumer_id="cust-1", credit_limit_cents=LIMIT)
BLOCKED = fact(Account.CardBlocked, reason="stolen")
UNBLOCKED = fact(Account.CardUnblocked)


def authorized(amount: int, order_id: str | None = None) -> Fact:
    return fact(Account.Authorized, order_id=order_id or str(uuid4()), amount_cents=amount)


def block(account: Account) -> None:
    account.block_card("stolen")


def unblock(account: Account) -> None:
    account.unblock_card()


# Account


def test_when_opened_then_opened_event_and_nothing_authorized():
    account = (
        given().when(lambda _: Account(consumer_id="cust-1", credit_limit_cents=LIMIT)).then(OPENED)
    )

    assert account.id == Account.create_id("cust-1") == uuid5(NAMESPACE, "cust-1")
    assert account.authorized_total_cents == 0
    assert not account.card_blocked
    assert account.refusal_for(LIMIT) is None


@pytest.mark.parametrize("limit", [0, -1])
def test_when_opened_with_a_non_positive_limit_then_domain_error(limit):
    given().when(lambda _: Account(consumer_id="cust-1", credit_limit_cents=limit)).then_error(
        DomainError, "the credit limit must be positive"
    )


def test_given_an_account_when_authorized_then_authorized_event_and_the_total_grows():
    order_id = str(uuid4())

    account = (
        given(OPENED)
        .when(lambda account: account.authorize(order_id, 2500))
        .then(authorized(2500, order_id))
    )

    assert account.authorized_total_cents == 2500


def test_the_credit_limit_is_on_the_total_of_all_authorizations():
    history = given(OPENED, authorized(4000), authorized(5000))

    assert history.aggregate.authorized_total_cents == 9000
    assert history.aggregate.refusal_for(2500) == "over the credit limit: 9000 + 2500 > 10000"
    account = history.when(lambda account: account.authorize(str(uuid4()), 2500)).then_error(
        DomainError, "over the credit limit: 9000 + 2500 > 10000"
    )
    assert account.authorized_total_cents == 9000


def test_exactly_at_the_limit_is_allowed():
    history = given(OPENED, authorized(9000))
    order_id = str(uuid4())

    assert history.aggregate.refusal_for(1000) is None
    account = history.when(lambda account: account.authorize(order_id, 1000)).then(
        authorized(1000, order_id)
    )

    assert account.authorized_total_cents == LIMIT
    assert account.refusal_for(1) == "over the credit limit: 10000 + 1 > 10000"


def test_a_single_amount_over_the_limit_is_refused():
    refusal = given(OPENED).aggregate.refusal_for(LIMIT + 1)

    assert refusal == "over the credit limit: 0 + 10001 > 10000"


@pytest.mark.parametrize("amount", [0, -5])
def test_a_non_positive_amount_is_a_domain_error(amount):
    given(OPENED).when(lambda account: account.authorize(str(uuid4()), amount)).then_error(
        DomainError, "an authorization must be for a positive amount"
    )


def test_given_an_account_when_the_card_is_blocked_then_card_blocked_event_and_refusals():
    account = given(OPENED, authorized(1000)).when(block).then(BLOCKED)

    assert account.card_blocked
    assert account.refusal_for(1) == "card blocked: stolen"
    given(OPENED, authorized(1000), BLOCKED).when(
        lambda account: account.authorize(str(uuid4()), 1)
    ).then_error(DomainError, "card blocked: stolen")


def test_given_a_blocked_card_when_unblocked_then_card_unblocked_event_and_it_authorizes():
    account = given(OPENED, BLOCKED).when(unblock).then(UNBLOCKED)

    assert not account.card_blocked
    assert account.refusal_for(LIMIT) is None


@pytest.mark.parametrize(
    ("history", "command", "message"),
    [
        ([BLOCKED], block, "the card of cust-1 is already blocked"),
        ([], unblock, "the card of cust-1 is not blocked"),
        ([BLOCKED, UNBLOCKED], unblock, "the card of cust-1 is not blocked"),
    ],
    ids=["block twice", "unblock an unblocked card", "unblock twice"],
)
def test_when_a_forbidden_command_then_domain_error_and_no_event(history, command, message):
    given(OPENED, *history).when(command).then_error(DomainError, message)


def test_given_its_events_when_replayed_then_the_same_account():
    account = Account(consumer_id="cust-1", credit_limit_cents=LIMIT)
    account.authorize(str(uuid4()), 4000)
    account.authorize(str(uuid4()), 3000)
    account.block_card("stolen")
    events = account.collect_events()

    replayed = None
    for domain_event in events:
        replayed = domain_event.mutate(replayed)

    assert isinstance(replayed, Account)
    assert (replayed.id, replayed.version) == (account.id, 4)
    assert replayed.authorized_total_cents == 7000
    assert replayed.refusal_for(1) == "card blocked: stolen"


# Authorization


def test_when_authorized_then_an_authorization_keyed_by_the_order():
    order_id = str(uuid4())
    event = fact(
        Authorization.Authorized,
        originator_id=UUID(order_id),
        order_id=order_id,
        consumer_id="cust-1",
        amount_cents=2500,
    )

    authorization = (
        given().when(lambda _: Authorization.succeeded(order_id, "cust-1", 2500)).then(event)
    )

    assert authorization.authorized and authorization.amount_cents == 2500


def test_when_failed_then_a_failed_authorization_with_the_reason():
    # then() also checks that the Failed event, replayed, makes the same authorization
    order_id = str(uuid4())
    event = fact(
        Authorization.Failed,
        originator_id=UUID(order_id),
        order_id=order_id,
        consumer_id="cust-1",
        reason="card blocked: stolen",
    )

    authorization = (
        given()
        .when(lambda _: Authorization.failed(order_id, "cust-1", "card blocked: stolen"))
        .then(event)
    )

    assert not authorization.authorized
    assert authorization.reason == "card blocked: stolen"


def test_an_authorization_is_created_only_through_its_outcome():
    with pytest.raises(TypeError, match="created"):
        Authorization(order_id=str(uuid4()), consumer_id="cust-1")


# The relay's mapping


def test_authorized_maps_to_card_authorized_and_failed_to_card_authorization_failed():
    order_id = str(uuid4())
    [ok] = Authorization.succeeded(order_id, "cust-1", 2500).collect_events()
    [refused] = Authorization.failed(order_id, "cust-1", "card blocked: x").collect_events()

    assert to_contract(ok) == contract.CardAuthorized(
        order_id=order_id, consumer_id="cust-1", amount_cents=2500
    )
    assert to_contract(refused) == contract.CardAuthorizationFailed(
        order_id=order_id, consumer_id="cust-1", reason="card blocked: x"
    )


def test_the_account_s_own_events_stay_private():
    account = Account(consumer_id="cust-1", credit_limit_cents=LIMIT)
    account.authorize(str(uuid4()), 100)
    account.block_card("stolen")
    account.unblock_card()

    assert [to_contract(e) for e in account.collect_events()] == [None] * 4


# The application's commands, on the in-memory store


@pytest.fixture
def app():
    application = AccountingApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield application
    application.close()


def test_open_block_unblock_reload_from_the_store(app):
    app.open_account("cust-1", LIMIT)
    app.block_card("cust-1", "stolen")
    assert app.get_account("cust-1").card_blocked

    app.unblock_card("cust-1")

    account = app.get_account("cust-1")
    assert (account.credit_limit_cents, account.card_blocked, account.version) == (LIMIT, False, 3)


def test_opening_twice_is_a_domain_error_and_stores_nothing(app):
    app.open_account("cust-1", LIMIT)

    with pytest.raises(DomainError, match="^consumer cust-1 already has an account$"):
        app.open_account("cust-1", 50)

    assert app.recorder.max_notification_id() == 1
    assert app.get_account("cust-1").credit_limit_cents == LIMIT


@pytest.mark.parametrize(
    "command",
    [
        lambda app: app.get_account("cust-9"),
        lambda app: app.block_card("cust-9", "stolen"),
        lambda app: app.unblock_card("cust-9"),
    ],
    ids=["get", "block", "unblock"],
)
def test_an_unknown_account_is_not_found(app, command):
    with pytest.raises(NotFound, match="^no account for consumer cust-9$"):
        command(app)
    assert app.recorder.max_notification_id() is None


def authorize(app: AccountingApplication, order_id: str, consumer_id: str, amount: int):
    """Run the authorize command; the Authorization it saved."""
    app.authorize(order_id, consumer_id, amount)
    return app.get_authorization(order_id)


def test_authorize_saves_the_account_and_the_authorization_together(app):
    app.open_account("cust-1", LIMIT)
    order_id = str(uuid4())

    app.authorize(order_id, "cust-1", 2500)

    assert app.recorder.max_notification_id() == 3, "one event each, in one save"
    assert app.get_account("cust-1").authorized_total_cents == 2500
    authorization = app.get_authorization(order_id)
    assert authorization.authorized and authorization.amount_cents == 2500


def test_a_second_authorize_for_the_same_order_saves_nothing(app):
    app.open_account("cust-1", LIMIT)
    order_id = str(uuid4())
    app.authorize(order_id, "cust-1", 2500)

    app.authorize(order_id, "cust-1", 2500)
    app.fail_authorization(order_id, "cust-1", "boom")

    assert app.recorder.max_notification_id() == 3
    assert app.get_account("cust-1").authorized_total_cents == 2500


def test_a_second_failed_authorize_for_the_same_order_saves_nothing(app):
    order_id = str(uuid4())
    app.authorize(order_id, "cust-9", 2500)

    app.authorize(order_id, "cust-9", 2500)

    assert app.recorder.max_notification_id() == 1


def test_authorizations_add_up_across_orders_until_the_limit(app):
    app.open_account("cust-1", LIMIT)
    app.authorize(str(uuid4()), "cust-1", 4000)
    app.authorize(str(uuid4()), "cust-1", 5000)

    refused = authorize(app, str(uuid4()), "cust-1", 2500)
    exact = authorize(app, str(uuid4()), "cust-1", 1000)

    assert not refused.authorized
    assert refused.reason == "over the credit limit: 9000 + 2500 > 10000"
    assert exact.authorized
    assert app.get_account("cust-1").authorized_total_cents == LIMIT


def test_without_an_account_the_authorization_fails(app):
    order_id = str(uuid4())

    authorization = authorize(app, order_id, "cust-9", 2500)

    assert str(authorization.id) == order_id
    assert (authorization.authorized, authorization.reason) == (
        False,
        "no account for consumer cust-9",
    )


def test_with_a_blocked_card_the_authorization_fails_and_the_account_is_untouched(app):
    app.open_account("cust-1", LIMIT)
    app.block_card("cust-1", "stolen")

    authorization = authorize(app, str(uuid4()), "cust-1", 2500)

    assert authorization.reason == "card blocked: stolen"
    assert app.get_account("cust-1").authorized_total_cents == 0


def test_two_authorizations_of_one_order_collide_in_the_store(app):
    order_id = str(uuid4())
    app.save(Authorization.failed(order_id, "cust-9", "no account for consumer cust-9"))

    with pytest.raises(IntegrityError):
        app.save(Authorization.failed(order_id, "cust-9", "no account for consumer cust-9"))
    assert app.recorder.max_notification_id() == 1
