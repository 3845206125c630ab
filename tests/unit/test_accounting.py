"""Specifications of the Account and Authorization aggregates: given, when, then events.

Pure domain code, no server. The last part drives the same rules through
AccountingApplication on eventsourcing's in-memory (POPO) store.
"""

from collections.abc import Callable
from typing import Any
from uuid import uuid4, uuid5

import pytest
from eventsourcing.persistence import IntegrityError

from contracts import accounting as contract
from kernel.errors import DomainError, NotFound
from write_side.accounting.application import AccountingApplication
from write_side.accounting.domain import NAMESPACE, Account, Authorization
from write_side.accounting.relay import to_contract

LIMIT = 10_000

Command = Callable[[Account], None]


def block(account: Account) -> None:
    account.block_card("stolen")


def unblock(account: Account) -> None:
    account.unblock_card()


def authorized(amount: int) -> Command:
    def authorize(account: Account) -> None:
        account.authorize(str(uuid4()), amount)

    authorize.__name__ = f"authorize {amount}"
    return authorize


def given(*history: Command) -> Account:
    """cust-1's account (limit 10000) opened, then ``history``; its events count as saved."""
    account = Account(consumer_id="cust-1", credit_limit_cents=LIMIT)
    for command in history:
        command(account)
    account.collect_events()
    return account


def then(aggregate: Account | Authorization, *expected: type) -> list[Any]:
    """The events the command produced are exactly ``expected`` (by type)."""
    events = list(aggregate.collect_events())
    assert [type(e) for e in events] == list(expected)
    return events


# Account


def test_when_opened_then_opened_event_and_nothing_authorized():
    account = Account(consumer_id="cust-1", credit_limit_cents=LIMIT)

    [opened] = then(account, Account.Opened)
    assert (opened.consumer_id, opened.credit_limit_cents) == ("cust-1", LIMIT)
    assert account.id == Account.create_id("cust-1") == uuid5(NAMESPACE, "cust-1")
    assert account.authorized_total_cents == 0
    assert not account.card_blocked
    assert account.refusal_for(LIMIT) is None


@pytest.mark.parametrize("limit", [0, -1])
def test_when_opened_with_a_non_positive_limit_then_domain_error(limit):
    with pytest.raises(DomainError, match="credit limit must be positive"):
        Account(consumer_id="cust-1", credit_limit_cents=limit)


def test_given_an_account_when_authorized_then_authorized_event_and_the_total_grows():
    account = given()
    order_id = str(uuid4())

    account.authorize(order_id, 2500)

    [event] = then(account, Account.Authorized)
    assert (event.order_id, event.amount_cents, event.originator_version) == (order_id, 2500, 2)
    assert account.authorized_total_cents == 2500


def test_the_credit_limit_is_on_the_total_of_all_authorizations():
    account = given(authorized(4000), authorized(5000))

    assert account.authorized_total_cents == 9000
    assert account.refusal_for(2500) == "over the credit limit: 9000 + 2500 > 10000"
    with pytest.raises(DomainError, match=r"^over the credit limit: 9000 \+ 2500 > 10000$"):
        account.authorize(str(uuid4()), 2500)
    then(account)
    assert account.authorized_total_cents == 9000


def test_exactly_at_the_limit_is_allowed():
    account = given(authorized(9000))

    assert account.refusal_for(1000) is None
    account.authorize(str(uuid4()), 1000)

    then(account, Account.Authorized)
    assert account.authorized_total_cents == LIMIT
    assert account.refusal_for(1) == "over the credit limit: 10000 + 1 > 10000"


def test_a_single_amount_over_the_limit_is_refused():
    assert given().refusal_for(LIMIT + 1) == "over the credit limit: 0 + 10001 > 10000"


@pytest.mark.parametrize("amount", [0, -5])
def test_a_non_positive_amount_is_a_domain_error(amount):
    account = given()

    with pytest.raises(DomainError, match="positive amount"):
        account.authorize(str(uuid4()), amount)
    then(account)


def test_given_an_account_when_the_card_is_blocked_then_card_blocked_event_and_refusals():
    account = given(authorized(1000))

    account.block_card("stolen")

    [blocked] = then(account, Account.CardBlocked)
    assert (blocked.reason, blocked.originator_version) == ("stolen", 3)
    assert account.card_blocked
    assert account.refusal_for(1) == "card blocked: stolen"
    with pytest.raises(DomainError, match="^card blocked: stolen$"):
        account.authorize(str(uuid4()), 1)
    then(account)


def test_given_a_blocked_card_when_unblocked_then_card_unblocked_event_and_it_authorizes():
    account = given(block)

    account.unblock_card()

    then(account, Account.CardUnblocked)
    assert not account.card_blocked
    assert account.refusal_for(LIMIT) is None


@pytest.mark.parametrize(
    ("history", "command", "message"),
    [
        ([block], block, "the card of cust-1 is already blocked"),
        ([], unblock, "the card of cust-1 is not blocked"),
        ([block, unblock], unblock, "the card of cust-1 is not blocked"),
    ],
    ids=["block twice", "unblock an unblocked card", "unblock twice"],
)
def test_when_a_forbidden_command_then_domain_error_and_no_event(history, command, message):
    account = given(*history)
    version = account.version

    with pytest.raises(DomainError, match=f"^{message}$"):
        command(account)

    then(account)
    assert account.version == version


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

    authorization = Authorization.succeeded(order_id, "cust-1", 2500)

    [event] = then(authorization, Authorization.Authorized)
    assert str(authorization.id) == order_id
    assert (event.order_id, event.consumer_id, event.amount_cents) == (order_id, "cust-1", 2500)
    assert authorization.authorized and authorization.amount_cents == 2500


def test_when_failed_then_a_failed_authorization_with_the_reason():
    order_id = str(uuid4())

    authorization = Authorization.failed(order_id, "cust-1", "card blocked: stolen")

    [event] = then(authorization, Authorization.Failed)
    assert str(authorization.id) == order_id
    assert event.reason == "card blocked: stolen"
    assert not authorization.authorized
    assert authorization.reason == "card blocked: stolen"
    assert event.mutate(None).reason == "card blocked: stolen"


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
