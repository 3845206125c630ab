"""The consumers and accounting saga reactions, driven message by message through each
service's Reactor, on SQLite and on PostgreSQL (one fresh schema per test).

Messages are real envelopes as the other services' relays would publish them; no
broker is needed, since the Reactor is what the saga worker runs on every message.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from contracts import accounting, consumers, kitchen, orders
from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from contracts.registry import editions
from kernel.application import ServiceApplication
from kernel.messaging import ConsumedMessage
from kernel.reactions import Reaction, Reactor
from write_side.accounting import relay as accounting_relay
from write_side.accounting.bootstrap import build_application as build_accounting
from write_side.accounting.domain import Account, Authorization
from write_side.accounting.saga import REACTIONS as ACCOUNTING_REACTIONS
from write_side.accounting.settings import AccountingSettings
from write_side.consumers import relay as consumers_relay
from write_side.consumers.bootstrap import build_application as build_consumers
from write_side.consumers.domain import Consumer, Verification
from write_side.consumers.saga import REACTIONS as CONSUMERS_REACTIONS
from write_side.consumers.settings import ConsumersSettings

ITEMS = [orders.LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250)]
TOTAL = 2500
LIMIT = 10_000
V1 = orders.OrderCreatedV1.type()


# Messages as the relays publish them


def envelope_of(event: ContractEvent, source: str, subject: str, version: int = 1) -> Envelope:
    event_id = event_id_for(source, subject, version)
    return Envelope(
        id=event_id,
        type=event.type(),
        source=source,
        subject=subject,
        time=datetime.now(UTC),
        correlationid=f"correlation-{subject}",
        causationid=f"cause-{event_id}",
        sequence=version,
        aggregateversion=version,
        data=event.model_dump(mode="json"),
    )


def message(envelope: Envelope, topic: str, offset: int, partition: int = 0) -> ConsumedMessage:
    return ConsumedMessage(
        topic=topic,
        partition=partition,
        offset=offset,
        key=envelope.subject.encode(),
        value=envelope.to_bytes(),
        headers=tuple(envelope.kafka_headers()),
    )


def order_created(order_id: str, customer_id: str = "cust-1") -> Envelope:
    event = orders.OrderCreated(
        order_id=order_id,
        customer_id=customer_id,
        restaurant_id="restaurant-1",
        delivery_address=orders.DeliveryAddress(street="1 Main Street"),
        line_items=ITEMS,
        total_cents=TOTAL,
    )
    return envelope_of(event, "orders", order_id)


def ticket_created(order_id: str, amount: int = TOTAL, consumer_id: str = "cust-1") -> Envelope:
    event = kitchen.TicketCreated(
        order_id=order_id,
        consumer_id=consumer_id,
        restaurant_id="restaurant-1",
        line_items=ITEMS,
        total_cents=amount,
    )
    # The kitchen's ticket is its own aggregate; any subject will do here.
    return envelope_of(event, "kitchen", str(uuid4()))


# What the services stored


def stored_events(app: ServiceApplication) -> list[Any]:
    return [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(1, 100)]


def stored_count(app: ServiceApplication) -> int:
    return app.recorder.max_notification_id() or 0


def published(app: ServiceApplication, to_contract: Any) -> list[ContractEvent]:
    """What the service's relay would publish from its log: the public events, in order."""
    contract_events = [to_contract(event) for event in stored_events(app)]
    return [event for event in contract_events if event is not None]


# Fixtures


@pytest.fixture
def consumers_app(store) -> Iterator[Any]:
    app = build_consumers(
        ConsumersSettings(
            consumers_database_url=store.url("consumers"), consumers_database_schema=store.schema
        )
    )
    yield app
    app.close()


@pytest.fixture
def consumers_reactor(consumers_app) -> Reactor:
    return Reactor(consumers_app, "consumers-saga", CONSUMERS_REACTIONS)


@pytest.fixture
def accounting_app(store) -> Iterator[Any]:
    app = build_accounting(
        AccountingSettings(
            accounting_database_url=store.url("accounting"),
            accounting_database_schema=store.schema,
        )
    )
    yield app
    app.close()


@pytest.fixture
def accounting_reactor(accounting_app) -> Reactor:
    return Reactor(accounting_app, "accounting-saga", ACCOUNTING_REACTIONS)


# consumers: OrderCreated → ConsumerVerified / ConsumerVerificationFailed


def test_an_order_of_a_registered_consumer_is_verified(consumers_app, consumers_reactor):
    consumers_app.register_consumer("cust-1", "Ann")
    order_id = str(uuid4())
    envelope = order_created(order_id)
    created = message(envelope, orders.TOPIC, offset=0)

    assert consumers_reactor.react(created) is None

    events = stored_events(consumers_app)
    assert [type(e) for e in events] == [Consumer.Registered, Verification.Verified]
    assert str(events[-1].originator_id) == order_id
    assert published(consumers_app, consumers_relay.to_contract) == [
        consumers.ConsumerVerified(
            order_id=order_id,
            consumer_id="cust-1",
            restaurant_id="restaurant-1",
            line_items=ITEMS,
            total_cents=TOTAL,
        )
    ]
    assert consumers_app.has_processed(consumers_reactor.tracking(created))


def test_the_verification_carries_the_order_s_correlation_and_is_caused_by_it(
    consumers_app, consumers_reactor
):
    consumers_app.register_consumer("cust-1", "Ann")
    envelope = order_created(str(uuid4()))

    consumers_reactor.react(message(envelope, orders.TOPIC, offset=0))

    [_, notification] = consumers_app.recorder.select_notifications(1, 100)
    metadata = consumers_app.mapper.metadata_of(notification)
    assert (metadata.correlation_id, metadata.causation_id) == (
        envelope.correlationid,
        envelope.id,
    )


def test_an_order_of_an_unknown_consumer_fails_verification(consumers_app, consumers_reactor):
    order_id = str(uuid4())

    assert consumers_reactor.react(message(order_created(order_id, "cust-9"), "orders", 0)) is None

    assert published(consumers_app, consumers_relay.to_contract) == [
        consumers.ConsumerVerificationFailed(
            order_id=order_id, consumer_id="cust-9", reason="consumer cust-9 is not registered"
        )
    ]


def test_an_order_of_a_deactivated_consumer_fails_verification_with_the_reason(
    consumers_app, consumers_reactor
):
    consumers_app.register_consumer("cust-1", "Ann")
    consumers_app.deactivate_consumer("cust-1", "unpaid bills")
    order_id = str(uuid4())

    consumers_reactor.react(message(order_created(order_id), orders.TOPIC, offset=0))

    [failed] = published(consumers_app, consumers_relay.to_contract)
    assert failed == consumers.ConsumerVerificationFailed(
        order_id=order_id,
        consumer_id="cust-1",
        reason="consumer cust-1 is deactivated: unpaid bills",
    )


def test_the_same_message_again_is_found_in_the_inbox_and_not_handled(
    consumers_app, consumers_reactor, monkeypatch
):
    consumers_app.register_consumer("cust-1", "Ann")
    created = message(order_created(str(uuid4())), orders.TOPIC, offset=7)
    consumers_reactor.react(created)
    before = stored_count(consumers_app)
    calls: list[Any] = []

    def verify(*args: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    monkeypatch.setattr(consumers_app, "verify", verify)

    assert consumers_reactor.react(created) is None

    assert stored_count(consumers_app) == before
    assert calls == [], "a tracked message is not handled again"


def test_the_same_event_republished_at_a_new_offset_makes_no_second_verification(
    consumers_app, consumers_reactor
):
    consumers_app.register_consumer("cust-1", "Ann")
    order_id = str(uuid4())
    envelope = order_created(order_id)
    consumers_reactor.react(message(envelope, orders.TOPIC, offset=0))
    before = stored_count(consumers_app)
    republished = message(envelope, orders.TOPIC, offset=1)

    assert consumers_reactor.react(republished) is None

    assert stored_count(consumers_app) == before
    assert consumers_app.has_processed(consumers_reactor.tracking(republished))
    assert len(published(consumers_app, consumers_relay.to_contract)) == 1


def test_an_order_verified_while_its_consumer_changes_stays_as_first_decided(
    consumers_app, consumers_reactor
):
    """A re-published OrderCreated meets the existing Verification, not the new state."""
    consumers_app.register_consumer("cust-1", "Ann")
    order_id = str(uuid4())
    envelope = order_created(order_id)
    consumers_reactor.react(message(envelope, orders.TOPIC, offset=0))
    consumers_app.deactivate_consumer("cust-1", "unpaid bills")

    consumers_reactor.react(message(envelope, orders.TOPIC, offset=1))

    assert consumers_app.get_verification(order_id).verified
    assert [type(e) for e in published(consumers_app, consumers_relay.to_contract)] == [
        consumers.ConsumerVerified
    ]


def test_an_error_while_verifying_ends_in_a_failed_verification_with_the_error(
    consumers_app, consumers_reactor, monkeypatch
):
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(consumers_app, "verify", broken)
    order_id = str(uuid4())

    assert consumers_reactor.react(message(order_created(order_id), orders.TOPIC, 0)) is None

    assert published(consumers_app, consumers_relay.to_contract) == [
        consumers.ConsumerVerificationFailed(
            order_id=order_id, consumer_id="cust-1", reason="RuntimeError: boom"
        )
    ]


def test_a_known_event_the_consumers_service_does_not_react_to_is_skipped(
    consumers_app, consumers_reactor
):
    order_id = str(uuid4())
    approved = envelope_of(orders.OrderApproved(order_id=order_id), "orders", order_id, 2)
    skipped = message(approved, orders.TOPIC, offset=3)

    assert consumers_reactor.react(skipped) is None

    assert stored_count(consumers_app) == 0
    assert consumers_app.has_processed(consumers_reactor.tracking(skipped))


def test_garbage_bytes_get_a_dead_letter_reason_and_are_not_recorded(
    consumers_app, consumers_reactor
):
    garbage = ConsumedMessage(orders.TOPIC, 0, 5, b"key", b"\x00not json{")

    reason = consumers_reactor.react(garbage)

    assert reason is not None and reason.startswith("not a valid envelope")
    assert stored_count(consumers_app) == 0
    assert not consumers_app.has_processed(consumers_reactor.tracking(garbage))


def test_an_order_created_that_violates_its_contract_gets_a_dead_letter_reason(
    consumers_app, consumers_reactor
):
    order_id = str(uuid4())
    envelope = order_created(order_id)
    broken = envelope.model_copy(update={"data": {**envelope.data, "total_cents": 0}})

    reason = consumers_reactor.react(message(broken, orders.TOPIC, offset=0))

    assert reason is not None and "violates its contract" in reason
    assert stored_count(consumers_app) == 0


def as_v1(envelope: Envelope) -> Envelope:
    """The v1 copy the orders relay also publishes in the transition period."""
    [_, v1] = editions(orders.OrderCreated.model_validate(envelope.data), {V1})
    return envelope.model_copy(update={"type": V1, "data": v1.model_dump(mode="json")})


def test_an_old_v1_order_created_is_verified_by_the_v2_reaction(consumers_app, consumers_reactor):
    consumers_app.register_consumer("cust-1", "Ann")
    order_id = str(uuid4())

    assert consumers_reactor.react(message(as_v1(order_created(order_id)), "orders", 0)) is None

    assert [type(e) for e in stored_events(consumers_app)][-1] is Verification.Verified


def test_the_v1_copy_of_an_order_created_after_its_v2_makes_no_second_verification(
    consumers_app, consumers_reactor
):
    consumers_app.register_consumer("cust-1", "Ann")
    order_id = str(uuid4())
    v2 = order_created(order_id)
    assert consumers_reactor.react(message(v2, "orders", offset=0)) is None
    stored = stored_count(consumers_app)

    assert consumers_reactor.react(message(as_v1(v2), "orders", offset=1)) is None

    assert stored_count(consumers_app) == stored  # nothing new but the inbox record
    assert len(published(consumers_app, consumers_relay.to_contract)) == 1


def test_a_consumer_still_on_v1_skips_the_v2_copy_and_reacts_to_the_v1_one(consumers_app):
    """In the transition period both majors are published: a v1 reader keeps working."""
    seen: list[orders.OrderCreatedV1] = []

    def record(_: ServiceApplication, event: orders.OrderCreatedV1, __: Envelope) -> None:
        seen.append(event)

    legacy = Reactor(consumers_app, "legacy-saga", [Reaction(orders.OrderCreatedV1, record)])
    v2 = order_created(str(uuid4()))

    assert legacy.react(message(v2, "orders", offset=0)) is None
    assert legacy.react(message(as_v1(v2), "orders", offset=1)) is None

    assert [event.delivery_address for event in seen] == ["1 Main Street"]
    assert consumers_app.has_processed(legacy.tracking(message(v2, "orders", offset=0)))


# accounting: TicketCreated → CardAuthorized / CardAuthorizationFailed


def test_a_ticket_is_authorized_and_the_total_grows(accounting_app, accounting_reactor):
    accounting_app.open_account("cust-1", LIMIT)
    order_id = str(uuid4())
    ticket = message(ticket_created(order_id), kitchen.TOPIC, offset=0)

    assert accounting_reactor.react(ticket) is None

    assert [type(e) for e in stored_events(accounting_app)] == [
        Account.Opened,
        Account.Authorized,
        Authorization.Authorized,
    ]
    assert published(accounting_app, accounting_relay.to_contract) == [
        accounting.CardAuthorized(order_id=order_id, consumer_id="cust-1", amount_cents=TOTAL)
    ]
    assert accounting_app.get_account("cust-1").authorized_total_cents == TOTAL
    assert accounting_app.has_processed(accounting_reactor.tracking(ticket))


def test_a_duplicate_ticket_is_not_authorized_twice(accounting_app, accounting_reactor):
    accounting_app.open_account("cust-1", LIMIT)
    envelope = ticket_created(str(uuid4()))
    accounting_reactor.react(message(envelope, kitchen.TOPIC, offset=0))
    before = stored_count(accounting_app)

    assert accounting_reactor.react(message(envelope, kitchen.TOPIC, offset=0)) is None
    assert accounting_reactor.react(message(envelope, kitchen.TOPIC, offset=1)) is None

    assert stored_count(accounting_app) == before
    assert accounting_app.get_account("cust-1").authorized_total_cents == TOTAL
    assert len(published(accounting_app, accounting_relay.to_contract)) == 1


def test_authorizations_add_up_and_the_one_over_the_limit_fails(accounting_app, accounting_reactor):
    accounting_app.open_account("cust-1", LIMIT)
    first, second, third = (str(uuid4()) for _ in range(3))

    accounting_reactor.react(message(ticket_created(first, 4000), kitchen.TOPIC, 0))
    accounting_reactor.react(message(ticket_created(second, 5000), kitchen.TOPIC, 1))
    accounting_reactor.react(message(ticket_created(third, 2500), kitchen.TOPIC, 2))

    assert published(accounting_app, accounting_relay.to_contract) == [
        accounting.CardAuthorized(order_id=first, consumer_id="cust-1", amount_cents=4000),
        accounting.CardAuthorized(order_id=second, consumer_id="cust-1", amount_cents=5000),
        accounting.CardAuthorizationFailed(
            order_id=third,
            consumer_id="cust-1",
            reason="over the credit limit: 9000 + 2500 > 10000",
        ),
    ]
    assert accounting_app.get_account("cust-1").authorized_total_cents == 9000


def test_a_blocked_card_or_no_account_fails_the_authorization(accounting_app, accounting_reactor):
    accounting_app.open_account("cust-1", LIMIT)
    accounting_app.block_card("cust-1", "stolen")
    blocked, unknown = str(uuid4()), str(uuid4())

    accounting_reactor.react(message(ticket_created(blocked), kitchen.TOPIC, 0))
    accounting_reactor.react(message(ticket_created(unknown, consumer_id="cust-9"), "kitchen", 1))

    assert published(accounting_app, accounting_relay.to_contract) == [
        accounting.CardAuthorizationFailed(
            order_id=blocked, consumer_id="cust-1", reason="card blocked: stolen"
        ),
        accounting.CardAuthorizationFailed(
            order_id=unknown, consumer_id="cust-9", reason="no account for consumer cust-9"
        ),
    ]
    assert accounting_app.get_account("cust-1").authorized_total_cents == 0


def test_a_conflict_on_the_account_is_decided_again_on_its_fresh_state(
    store, accounting_app, accounting_reactor, monkeypatch
):
    """Two tickets of one consumer on two partitions, handled by two saga workers (two
    Applications on one store): while the first worker decides its ticket, the other
    authorizes the second. The first's batch conflicts on the Account; the Reactor runs
    it again on the fresh Account, and the limit holds."""
    accounting_app.open_account("cust-1", LIMIT)
    first, second = str(uuid4()), str(uuid4())
    authorize, save = accounting_app.authorize, accounting_app.save
    decided: list[str] = []
    other_worker = build_accounting(
        AccountingSettings(
            accounting_database_url=store.url("accounting"),
            accounting_database_schema=store.schema,
        )
    )
    other_reactor = Reactor(other_worker, "accounting-saga", ACCOUNTING_REACTIONS)

    def counted_authorize(order_id: str, consumer_id: str, amount: int) -> None:
        decided.append(order_id)
        authorize(order_id, consumer_id, amount)

    def save_once_the_other_slipped_in(*aggregates: Any) -> Any:
        """The first ticket is decided on the Account it read: the other worker
        authorizes the second before that decision is saved."""
        if decided == [first]:
            other = message(ticket_created(second, 6000), kitchen.TOPIC, 0, partition=1)
            with ThreadPoolExecutor(1) as elsewhere:  # another process's worker, meanwhile
                assert elsewhere.submit(other_reactor.react, other).result() is None
            decided.append(second)
        return save(*aggregates)

    monkeypatch.setattr(accounting_app, "authorize", counted_authorize)
    monkeypatch.setattr(accounting_app, "save", save_once_the_other_slipped_in)
    try:
        result = accounting_reactor.react(
            message(ticket_created(first, 6000), kitchen.TOPIC, 0, partition=0)
        )
    finally:
        other_worker.close()

    assert result is None
    assert decided == [first, second, first], "the first ticket was decided twice"
    assert published(accounting_app, accounting_relay.to_contract) == [
        accounting.CardAuthorized(order_id=second, consumer_id="cust-1", amount_cents=6000),
        accounting.CardAuthorizationFailed(
            order_id=first,
            consumer_id="cust-1",
            reason="over the credit limit: 6000 + 6000 > 10000",
        ),
    ]
    assert accounting_app.get_account("cust-1").authorized_total_cents == 6000


def test_an_error_while_authorizing_ends_in_a_failed_authorization_with_the_error(
    accounting_app, accounting_reactor, monkeypatch
):
    def broken(*_: Any, **__: Any) -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(accounting_app, "authorize", broken)
    order_id = str(uuid4())

    assert accounting_reactor.react(message(ticket_created(order_id), kitchen.TOPIC, 0)) is None

    assert published(accounting_app, accounting_relay.to_contract) == [
        accounting.CardAuthorizationFailed(
            order_id=order_id, consumer_id="cust-1", reason="RuntimeError: boom"
        )
    ]


def test_a_known_event_accounting_does_not_react_to_is_skipped(accounting_app, accounting_reactor):
    order_id = str(uuid4())
    approved = kitchen.TicketApproved(order_id=order_id, restaurant_id="restaurant-1")
    skipped = message(envelope_of(approved, "kitchen", str(uuid4()), 2), kitchen.TOPIC, 4)

    assert accounting_reactor.react(skipped) is None

    assert stored_count(accounting_app) == 0
    assert accounting_app.has_processed(accounting_reactor.tracking(skipped))


def test_garbage_bytes_get_a_dead_letter_reason_in_accounting_too(
    accounting_app, accounting_reactor
):
    garbage = ConsumedMessage(kitchen.TOPIC, 0, 0, None, b"garbage")

    reason = accounting_reactor.react(garbage)

    assert reason is not None and reason.startswith("not a valid envelope")
    assert stored_count(accounting_app) == 0
    assert not accounting_app.has_processed(accounting_reactor.tracking(garbage))
