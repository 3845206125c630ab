"""Consumer-driven contract tests.

Every consumer (each projection, each service's saga reactions) declares the contract
versions it reads. Every event each producer can emit (its relay's real ``to_contract``
driven by an example of every domain event, plus the older majors it publishes in a
transition period) must validate against the committed schema of the version the
consumer reads, or be an older major that upcasts to it. A producer that changes a
contract some consumer depends on fails here, naming both.
"""

import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate, DomainEvent, Snapshot
from jsonschema import Draft202012Validator

from contracts import orders as orders_contract
from contracts.base import ContractEvent
from contracts.registry import editions, readable_types
from contracts.schemas import SchemaDirectory
from projections.orders import ORDERS
from projections.tickets import TICKETS
from tests.reference_saga.examples import PLACE_ORDER
from write_side.accounting import domain as accounting_domain
from write_side.accounting import relay as accounting_relay
from write_side.accounting import saga as accounting_saga
from write_side.consumers import domain as consumers_domain
from write_side.consumers import relay as consumers_relay
from write_side.consumers import saga as consumers_saga
from write_side.kitchen import domain as kitchen_domain
from write_side.kitchen import relay as kitchen_relay
from write_side.kitchen import saga as kitchen_saga
from write_side.orders import domain as orders_domain
from write_side.orders import relay as orders_relay
from write_side.orders import saga as orders_saga
from write_side.orders.settings import OrdersSettings

# Consumers: what each one declares it reads.


def declared_reactions(saga: ModuleType) -> tuple[type[ContractEvent], ...]:
    return tuple(reaction.event for reaction in saga.REACTIONS)


CONSUMERS: dict[str, tuple[type[ContractEvent], ...]] = {
    "projection orders": ORDERS.accepts,
    "projection tickets": TICKETS.accepts,
    "consumers-saga": declared_reactions(consumers_saga),
    "kitchen-saga": declared_reactions(kitchen_saga),
    "accounting-saga": declared_reactions(accounting_saga),
    "orders-saga": declared_reactions(orders_saga),
}


# Producers: an example of every domain event, through the relay's real mapping.


def orders_examples() -> list[Any]:
    approved = orders_domain.Order(**PLACE_ORDER)
    approved.approve()
    rejected = orders_domain.Order(**PLACE_ORDER)
    rejected.reject("card declined", "accounting")
    cancelled = orders_domain.Order(**{**PLACE_ORDER, "delivery_address": {"street": "1 Main"}})
    cancelled.approve()
    cancelled.cancel("changed my mind")
    return [e for order in (approved, rejected, cancelled) for e in order.collect_events()]


def consumers_examples() -> list[Any]:
    consumer = consumers_domain.Consumer("cust-1", "Ann")
    consumer.deactivate("moved away")
    consumer.reactivate()
    items = PLACE_ORDER["line_items"]
    verified = consumers_domain.Verification.succeeded(str(uuid4()), "cust-1", "r", items, 3400)
    failed = consumers_domain.Verification.failed(str(uuid4()), "cust-1", "not registered")
    return [e for a in (consumer, verified, failed) for e in a.collect_events()]


def kitchen_examples() -> list[Any]:
    restaurant = kitchen_domain.Restaurant("rest-1", "Pizza", ["pizza"])
    restaurant.close()
    restaurant.open()
    restaurant.set_menu(["pizza", "soda"])
    items = PLACE_ORDER["line_items"]
    approved = kitchen_domain.Ticket.create(uuid4(), "rest-1", "cust-1", items, 3400)
    approved.approve()
    cancelled = kitchen_domain.Ticket.create(uuid4(), "rest-1", "cust-1", items, 3400)
    cancelled.cancel("card blocked")
    rejected = kitchen_domain.Ticket.reject(uuid4(), "rest-1", "closed")
    return [e for a in (restaurant, approved, cancelled, rejected) for e in a.collect_events()]


def accounting_examples() -> list[Any]:
    account = accounting_domain.Account("cust-1", 10_000)
    account.block_card("lost")
    account.unblock_card()
    account.authorize(str(uuid4()), 3400)
    authorized = accounting_domain.Authorization.succeeded(str(uuid4()), "cust-1", 3400)
    failed = accounting_domain.Authorization.failed(str(uuid4()), "cust-1", "card blocked")
    return [e for a in (account, authorized, failed) for e in a.collect_events()]


@dataclass(frozen=True)
class Producer:
    service: str
    domain: ModuleType
    to_contract: Callable[[Any], ContractEvent | None]
    examples: Callable[[], list[Any]]
    also_publish: frozenset[str] = frozenset()

    def emissions(self) -> list[list[ContractEvent]]:
        """For each example domain event that is published: every major published."""
        published = []
        for domain_event in self.examples():
            contract = self.to_contract(domain_event)
            if contract is not None:
                published.append(editions(contract, self.also_publish))
        return published


def producers() -> list[Producer]:
    """Built on each call, so a test can swap a relay's mapping before."""
    return [
        Producer(
            "orders",
            orders_domain,
            orders_relay.to_contract,
            orders_examples,
            OrdersSettings.model_fields["orders_relay_also_publish"].default,
        ),
        Producer("consumers", consumers_domain, consumers_relay.to_contract, consumers_examples),
        Producer("kitchen", kitchen_domain, kitchen_relay.to_contract, kitchen_examples),
        Producer(
            "accounting", accounting_domain, accounting_relay.to_contract, accounting_examples
        ),
    ]


def domain_event_classes(domain: ModuleType) -> set[type]:
    aggregates = [
        cls
        for _, cls in inspect.getmembers(domain, inspect.isclass)
        if issubclass(cls, Aggregate) and cls.__module__ == domain.__name__
    ]
    return {
        member
        for aggregate in aggregates
        for member in vars(aggregate).values()
        if isinstance(member, type)
        and issubclass(member, DomainEvent)
        and not issubclass(member, Snapshot)
        and not _generated_base(member)
    }


def _generated_base(event_class: type) -> bool:
    """The ``Created`` and ``Event`` bases eventsourcing defines on every aggregate."""
    own = vars(event_class)
    return event_class.__name__ in ("Created", "Event") and not (
        own.get("__annotations__") or "apply" in own
    )


# The check


def violations(consumers: dict[str, Iterable[type[ContractEvent]]]) -> list[str]:
    """What some producer emits that some consumer could not read; [] if none.

    A domain event may be published in several majors (a transition period): a consumer
    needs at least one it reads (it skips the others), and each one it reads must
    validate against the committed schema of its version.
    """
    published = [
        (producer.service, copies) for producer in producers() for copies in producer.emissions()
    ]
    found: list[str] = []
    for consumer, declared in consumers.items():
        accepted = tuple(declared)
        readable = readable_types(accepted)
        for model in accepted:
            relevant = [(s, c) for s, c in published if c[0].name == model.name]
            if not relevant:
                found.append(f"{consumer} reads {model.type()}, which no producer emits")
            for service, copies in relevant:
                read = [event for event in copies if event.type() in readable]
                if not read:
                    emitted = ", ".join(event.type() for event in copies)
                    found.append(
                        f"{consumer} reads {model.type()} but {service} emits only {emitted}"
                    )
                for event in read:
                    found += _schema_errors(consumer, model, service, event)
    return found


def _schema_errors(
    consumer: str, model: type[ContractEvent], service: str, event: ContractEvent
) -> list[str]:
    # The consumer's own version; an older major against its own schema (then upcast).
    version = model.version if event.type() == model.type() else event.version
    file = SchemaDirectory().file(model.name, version)
    validator = Draft202012Validator(json.loads(file.read_text()))
    return [
        f"{consumer} reads {model.name} {version}: {service} emits {event.type()} with "
        f"{'.'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(event.model_dump(mode="json"))
    ]


def test_every_event_a_producer_emits_validates_for_every_consumer_of_it() -> None:
    assert violations(CONSUMERS) == []


def test_the_examples_cover_every_domain_event_of_every_producer() -> None:
    for producer in producers():
        examples = {type(e) for e in producer.examples()}
        assert domain_event_classes(producer.domain) <= examples, producer.service


def test_the_transition_period_emits_both_majors_of_order_created() -> None:
    [orders] = [p for p in producers() if p.service == "orders"]
    types = {event.type() for copies in orders.emissions() for event in copies}
    assert {"orders.OrderCreated.v1", "orders.OrderCreated.v2"} <= types


# The test of the test: a producer that breaks a contract its consumers depend on.


class OrderCreatedWithoutTotal(orders_contract.OrderCreated):
    """A producer's mistake: orders.OrderCreated 2.0 published without total_cents."""

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        dumped = super().model_dump(**kwargs)
        dumped.pop("total_cents")
        return dumped


class TicketCreatedWithTextTotal(
    orders_contract.ContractEvent, name="kitchen.TicketCreated", version="1.0"
):
    """A producer's mistake: kitchen.TicketCreated 1.0 with total_cents as text."""

    order_id: str
    consumer_id: str
    restaurant_id: str
    line_items: list[orders_contract.LineItem]
    total_cents: str


def test_a_producer_dropping_a_field_fails_naming_consumer_field_and_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = orders_relay.to_contract

    def dropping_total(event: Any) -> ContractEvent | None:
        contract = real(event)
        if isinstance(contract, orders_contract.OrderCreated):
            return OrderCreatedWithoutTotal(**dict(contract))
        return contract

    monkeypatch.setattr(orders_relay, "to_contract", dropping_total)

    found = violations(CONSUMERS)

    assert (
        "consumers-saga reads orders.OrderCreated 2.0: orders emits orders.OrderCreated.v2 "
        "with (root): 'total_cents' is a required property"
    ) in found
    assert any(line.startswith("projection orders reads orders.OrderCreated 2.0") for line in found)


def test_a_producer_retyping_a_field_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real = kitchen_relay.to_contract

    def text_total(event: Any) -> ContractEvent | None:
        contract = real(event)
        if type(contract).__name__ == "TicketCreated":
            return TicketCreatedWithTextTotal(**{**dict(contract), "total_cents": "3400"})
        return contract

    monkeypatch.setattr(kitchen_relay, "to_contract", text_total)

    assert (
        "accounting-saga reads kitchen.TicketCreated 1.0: kitchen emits kitchen.TicketCreated.v1 "
        "with total_cents: '3400' is not of type 'integer'"
    ) in violations(CONSUMERS)


def test_a_producer_moving_to_a_new_major_alone_fails_for_consumers_of_the_old_one() -> None:
    """A consumer still on v1 while orders stopped publishing v1 (transition over)."""
    stale = {"legacy-consumer": (orders_contract.OrderCreatedV1,)}
    found = violations(stale)
    assert found == []  # today orders still publishes v1 beside v2

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            OrdersSettings.model_fields["orders_relay_also_publish"], "default", frozenset()
        )
        assert (
            "legacy-consumer reads orders.OrderCreated.v1 but orders emits only "
            "orders.OrderCreated.v2"
        ) in violations(stale)
