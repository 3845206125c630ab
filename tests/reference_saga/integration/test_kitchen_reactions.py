"""The kitchen's saga reactions, driven message by message through its Reactor, on SQLite
and on PostgreSQL. The messages carry real envelopes, as the other services' relays
publish them; no broker is needed to decide what the kitchen does with them.
"""

import uuid
from datetime import UTC, datetime

import pytest

from contracts import accounting, consumers
from contracts import kitchen as contract
from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from contracts.orders import LineItem
from kernel.errors import NotFound
from kernel.messaging import ConsumedMessage
from kernel.reactions import Reactor
from write_side.kitchen.application import KitchenApplication
from write_side.kitchen.bootstrap import build_application
from write_side.kitchen.domain import Ticket, TicketState
from write_side.kitchen.relay import to_contract
from write_side.kitchen.saga import REACTIONS
from write_side.kitchen.settings import KitchenSettings

CONSUMER = "kitchen-saga"
PIZZA = LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250)
SODA = LineItem(menu_item_id="soda", quantity=3, unit_price_cents=300)
SUSHI = LineItem(menu_item_id="sushi", quantity=1, unit_price_cents=900)
TOTAL = 2 * 1250 + 3 * 300


@pytest.fixture
def app(store):
    application = build_application(
        KitchenSettings(
            kitchen_database_url=store.url("kitchen"), kitchen_database_schema=store.schema
        )
    )
    application.register_restaurant("rest-1", "Pizzeria", ["pizza", "soda"])
    yield application
    application.close()


@pytest.fixture
def reactor(app):
    return Reactor(app, CONSUMER, REACTIONS)


@pytest.fixture
def order_id() -> str:
    return str(uuid.uuid4())


def envelope(event: ContractEvent, version: int = 1) -> Envelope:
    """The envelope the event's producer would publish (its id is deterministic)."""
    source = event.name.split(".")[0]
    aggregate_id = event.order_id  # type: ignore[attr-defined]  # every saga event has one
    event_id = event_id_for(source, aggregate_id, version)
    return Envelope(
        id=event_id,
        type=event.type(),
        source=source,
        subject=aggregate_id,
        time=datetime.now(UTC),
        correlationid=f"checkout-{aggregate_id}",
        causationid=event_id,
        sequence=7,
        aggregateversion=version,
        data=event.model_dump(mode="json"),
    )


def at(offset: int, sent: Envelope | bytes | None, topic: str | None = None) -> ConsumedMessage:
    """A message as the saga worker reads it, at ``offset`` of partition 0."""
    if isinstance(sent, Envelope):
        topic = topic or sent.source
        return ConsumedMessage(
            topic=topic,
            partition=0,
            offset=offset,
            key=sent.subject.encode(),
            value=sent.to_bytes(),
            headers=tuple(sent.kafka_headers()),
        )
    return ConsumedMessage(
        topic=topic or "consumers", partition=0, offset=offset, key=None, value=sent
    )


def verified(order_id: str, restaurant_id: str = "rest-1", items=(PIZZA, SODA)) -> Envelope:
    return envelope(
        consumers.ConsumerVerified(
            order_id=order_id,
            consumer_id="consumer-1",
            restaurant_id=restaurant_id,
            line_items=list(items),
            total_cents=sum(item.quantity * item.unit_price_cents for item in items),
        )
    )


def authorized(order_id: str) -> Envelope:
    return envelope(
        accounting.CardAuthorized(order_id=order_id, consumer_id="consumer-1", amount_cents=TOTAL)
    )


def refused(order_id: str) -> Envelope:
    return envelope(
        accounting.CardAuthorizationFailed(
            order_id=order_id, consumer_id="consumer-1", reason="card blocked"
        )
    )


def stored(app: KitchenApplication) -> int:
    return app.recorder.max_notification_id() or 0


def ticket(app: KitchenApplication, order_id: str) -> Ticket:
    return app.get_ticket(uuid.UUID(order_id))


def handled(reactor: Reactor, message: ConsumedMessage) -> bool:
    return reactor.app.has_processed(reactor.tracking(message))


def published(app: KitchenApplication, after: int = 0) -> list[ContractEvent | None]:
    """The contract events the relay would publish for the log after ``after``."""
    return [
        to_contract(app.mapper.to_domain_event(notification))
        for notification in app.recorder.select_notifications(after + 1, 100)
    ]


# ConsumerVerified → a ticket


def test_consumer_verified_creates_a_pending_ticket(app, reactor, order_id):
    before = stored(app)
    message = at(0, verified(order_id))

    assert reactor.react(message) is None

    created = ticket(app, order_id)
    assert (created.state, created.version) == (TicketState.CREATE_PENDING, 1)
    assert (created.restaurant_id, created.consumer_id, created.total_cents) == (
        "rest-1",
        "consumer-1",
        TOTAL,
    )
    assert created.line_items == [PIZZA.model_dump(), SODA.model_dump()]
    assert stored(app) == before + 1
    assert handled(reactor, message)


def test_the_ticket_event_carries_the_messages_correlation_and_cause(app, reactor, order_id):
    sent = verified(order_id)

    reactor.react(at(0, sent))

    [notification] = app.recorder.select_notifications(stored(app), 1)
    metadata = app.mapper.metadata_of(notification)
    assert (metadata.correlation_id, metadata.causation_id) == (sent.correlationid, sent.id)


@pytest.mark.parametrize(
    ("prepare", "restaurant_id", "items", "reason"),
    [
        (
            lambda app: app.close_restaurant("rest-1"),
            "rest-1",
            (PIZZA,),
            "restaurant rest-1 is closed",
        ),
        (lambda app: None, "rest-1", (PIZZA, SUSHI), "not on the menu of rest-1: sushi"),
        (lambda app: None, "rest-9", (PIZZA,), "unknown restaurant rest-9"),
    ],
    ids=["closed", "not on the menu", "unknown restaurant"],
)
def test_consumer_verified_for_an_order_the_kitchen_cannot_make_rejects_the_ticket(
    app, reactor, order_id, prepare, restaurant_id, items, reason
):
    prepare(app)
    before = stored(app)

    assert reactor.react(at(0, verified(order_id, restaurant_id, items))) is None

    rejected = ticket(app, order_id)
    assert (rejected.state, rejected.reason, rejected.version) == (TicketState.REJECTED, reason, 1)
    assert rejected.restaurant_id == restaurant_id
    assert published(app, before) == [
        contract.TicketRejected(order_id=order_id, restaurant_id=restaurant_id, reason=reason)
    ]


def test_the_same_message_again_changes_nothing(app, reactor, order_id):
    message = at(0, verified(order_id))
    reactor.react(message)
    before = stored(app)

    assert reactor.react(message) is None

    assert stored(app) == before
    assert ticket(app, order_id).version == 1


def test_the_same_event_republished_at_a_new_offset_makes_no_second_ticket(app, reactor, order_id):
    sent = verified(order_id)
    reactor.react(at(0, sent))
    before = stored(app)
    republished = at(5, sent)

    assert reactor.react(republished) is None

    assert stored(app) == before
    assert ticket(app, order_id).version == 1
    assert handled(reactor, republished)


def test_a_verified_order_arriving_after_the_restaurant_closed_keeps_its_pending_ticket(
    app, reactor, order_id
):
    """A re-published copy meets the ticket the first copy made: it is not re-decided."""
    sent = verified(order_id)
    reactor.react(at(0, sent))
    app.close_restaurant("rest-1")

    reactor.react(at(1, sent))

    assert ticket(app, order_id).state is TicketState.CREATE_PENDING


def test_when_making_the_ticket_fails_a_rejected_ticket_holds_the_error(
    app, reactor, order_id, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("menu store corrupted")

    monkeypatch.setattr(app, "create_ticket", broken)
    message = at(0, verified(order_id))

    assert reactor.react(message) is None

    rejected = ticket(app, order_id)
    assert rejected.state is TicketState.REJECTED
    assert rejected.reason == (
        "the kitchen could not create the ticket: RuntimeError: menu store corrupted"
    )
    assert handled(reactor, message)


def test_a_verified_order_whose_id_is_not_a_uuid_is_dead_lettered(app, reactor):
    """The contract requires a UUID order id: such a message is refused, not swallowed."""
    before = stored(app)
    valid = verified(str(uuid.uuid4()))
    message = at(0, valid.model_copy(update={"data": {**valid.data, "order_id": "order-1"}}))

    reason = reactor.react(message)

    assert reason is not None and "order_id" in reason
    assert stored(app) == before
    assert not handled(reactor, message)


# The card's outcome → approve or cancel (compensation)


def test_card_authorized_moves_the_ticket_to_awaiting_acceptance(app, reactor, order_id):
    reactor.react(at(0, verified(order_id)))

    assert reactor.react(at(0, authorized(order_id), topic=accounting.TOPIC)) is None

    approved = ticket(app, order_id)
    assert (approved.state, approved.version) == (TicketState.AWAITING_ACCEPTANCE, 2)


def test_card_authorization_failed_cancels_the_ticket(app, reactor, order_id):
    reactor.react(at(0, verified(order_id)))

    assert reactor.react(at(0, refused(order_id))) is None

    cancelled = ticket(app, order_id)
    assert (cancelled.state, cancelled.version) == (TicketState.CANCELLED, 2)
    assert cancelled.reason == "card blocked"


@pytest.mark.parametrize("outcome", [authorized, refused], ids=["authorized", "refused"])
def test_the_cards_outcome_again_adds_no_event(app, reactor, order_id, outcome):
    reactor.react(at(0, verified(order_id)))
    sent = outcome(order_id)
    reactor.react(at(0, sent))
    before, state = stored(app), ticket(app, order_id).state

    redelivered = reactor.react(at(0, sent))
    republished = reactor.react(at(1, sent))

    assert (redelivered, republished) == (None, None)
    assert stored(app) == before
    assert (ticket(app, order_id).state, ticket(app, order_id).version) == (state, 2)
    assert handled(reactor, at(1, sent))


def test_the_card_outcome_for_an_order_without_a_ticket_is_dead_lettered(app, reactor, order_id):
    before = stored(app)
    message = at(0, authorized(order_id))

    reason = reactor.react(message)

    assert reason == f"reaction failed: NotFound: ticket for order {order_id} not found"
    assert reason.kind == "reaction-failed"
    assert stored(app) == before
    assert not handled(reactor, message)  # recorded by skip() once the dead letter is sent


def test_a_card_authorized_after_the_ticket_was_cancelled_is_dead_lettered(app, reactor, order_id):
    reactor.react(at(0, verified(order_id)))
    reactor.react(at(0, refused(order_id)))
    before = stored(app)

    reason = reactor.react(at(1, authorized(order_id)))

    assert reason == "reaction failed: DomainError: cannot approve a ticket that is CANCELLED"
    assert stored(app) == before
    assert ticket(app, order_id).state is TicketState.CANCELLED


# Messages the kitchen does not act on


def test_a_known_event_the_kitchen_does_not_react_to_is_skipped(app, reactor, order_id):
    before = stored(app)
    message = at(
        0,
        envelope(
            consumers.ConsumerVerificationFailed(
                order_id=order_id, consumer_id="consumer-1", reason="consumer blocked"
            )
        ),
    )

    assert reactor.react(message) is None

    assert stored(app) == before
    assert handled(reactor, message)


@pytest.mark.parametrize(
    ("value", "reason"),
    [(b"\xff\x00 not json", "not a valid envelope"), (None, "empty message")],
    ids=["garbage", "no value"],
)
def test_an_unreadable_message_gets_a_dead_letter_reason_and_changes_nothing(
    app, reactor, value, reason
):
    before = stored(app)
    message = at(0, value)

    dead_letter_reason = reactor.react(message)

    assert dead_letter_reason is not None and reason in dead_letter_reason
    assert dead_letter_reason.kind == "malformed"
    assert stored(app) == before
    assert not handled(reactor, message)
    reactor.skip(message)  # what the worker does once the dead letter is sent
    assert handled(reactor, message)


def test_a_verified_order_that_violates_its_contract_gets_a_dead_letter_reason(
    app, reactor, order_id
):
    sent = verified(order_id)
    broken = sent.model_copy(update={"data": {**sent.data, "line_items": []}})

    reason = reactor.react(at(0, broken))

    assert reason is not None and "consumers.ConsumerVerified.v1 violates its contract" in reason
    assert reason.kind == "schema-violation"
    with pytest.raises(NotFound):
        ticket(app, order_id)


# What the relay publishes for the tickets the saga made


def test_to_contract_maps_the_stored_ticket_events_to_the_kitchen_contract(app, reactor, order_id):
    approved_id, cancelled_id, rejected_id = order_id, str(uuid.uuid4()), str(uuid.uuid4())
    reactor.react(at(0, verified(approved_id)))
    reactor.react(at(1, verified(cancelled_id)))
    reactor.react(at(2, verified(rejected_id, items=(SUSHI,))))
    reactor.react(at(0, authorized(approved_id)))
    reactor.react(at(1, refused(cancelled_id)))

    created = {
        "consumer_id": "consumer-1",
        "restaurant_id": "rest-1",
        "line_items": [PIZZA, SODA],
        "total_cents": TOTAL,
    }
    assert published(app) == [
        None,  # the restaurant's registration stays private
        contract.TicketCreated(order_id=approved_id, **created),
        contract.TicketCreated(order_id=cancelled_id, **created),
        contract.TicketRejected(
            order_id=rejected_id, restaurant_id="rest-1", reason="not on the menu of rest-1: sushi"
        ),
        contract.TicketApproved(order_id=approved_id, restaurant_id="rest-1"),
        contract.TicketCancelled(
            order_id=cancelled_id, restaurant_id="rest-1", reason="card blocked"
        ),
    ]


def test_restaurant_events_stay_private(app):
    before = stored(app)
    app.close_restaurant("rest-1")
    app.set_menu("rest-1", ["sushi"])
    app.open_restaurant("rest-1")

    assert published(app, before) == [None, None, None]
