"""What must hold once a round's load has stopped and the system has settled.

Each check reads the services' stores (their Applications, opened as the services open
them), the read models, the broker; it lists every problem it finds, precisely enough
to look for its cause: the order's number, kind and id, what was expected, what is.
"""

from __future__ import annotations

import asyncio
import importlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo.asynchronous.database import AsyncDatabase

from bench.chaos.observe import Sample
from bench.chaos.stores import Stores, event_name
from bench.chaos.system import PARTITIONS, SERVICES
from bench.chaos.workload import PlacedOrder
from devstack.run import DEAD_LETTER_TOPICS
from kernel.projection_catalog import Catalog
from kernel.projections_status import projections_status
from kernel.replay import QuietListener, Replay, ReplayOptions, shadow_check
from operations.replay import store_log
from projections.registry import PROJECTIONS

ORDER_STATES = {
    "Order.Placed": "APPROVAL_PENDING",
    "Order.Approved": "APPROVED",
    "Order.Rejected": "REJECTED",
    "Order.Cancelled": "CANCELLED",
}
TICKET_STATES = {
    "Ticket.Created": "CREATE_PENDING",
    "Ticket.Rejected": "REJECTED",
    "Ticket.Approved": "AWAITING_ACCEPTANCE",
    "Ticket.Cancelled": "CANCELLED",
}
AUTHORIZATION_STATES = {"Authorization.Authorized": "AUTHORIZED", "Authorization.Failed": "FAILED"}


@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class StoredOrder:
    """One Order aggregate as the orders store holds it."""

    order_id: str
    key: str  # the delivery address's street: the client's Idempotency-Key
    customer_id: str
    total_cents: int
    state: str
    failed_step: str | None
    events: list[str]


@dataclass
class Facts:
    """What the stores hold, read once for every check."""

    orders: dict[str, list[StoredOrder]]  # by Idempotency-Key
    tickets: dict[str, list[str]]  # events by order id
    authorizations: dict[str, list[str]]  # events by order id
    account_authorized: dict[str, list[tuple[str, int]]]  # (order id, cents) by consumer

    @classmethod
    def read(cls, stores: Stores) -> Facts:
        orders: dict[str, list[StoredOrder]] = defaultdict(list)
        for order_id, events in stores.histories("orders").items():
            placed = events[0]
            names = [event_name(e) for e in events]
            last = next(e for e in reversed(events) if event_name(e) in ORDER_STATES)
            orders[placed.delivery_address["street"]].append(
                StoredOrder(
                    order_id=str(order_id),
                    key=placed.delivery_address["street"],
                    customer_id=placed.customer_id,
                    total_cents=sum(
                        i["quantity"] * i["unit_price_cents"] for i in placed.line_items
                    ),
                    state=ORDER_STATES[event_name(last)],
                    failed_step=getattr(last, "failed_step", None),
                    events=names,
                )
            )
        tickets: dict[str, list[str]] = {}
        for aggregate_id, events in stores.histories("kitchen").items():
            names = [event_name(e) for e in events]
            if names[0] in TICKET_STATES:
                tickets[str(aggregate_id)] = names
        authorizations: dict[str, list[str]] = {}
        account_authorized: dict[str, list[tuple[str, int]]] = {}
        for aggregate_id, events in stores.histories("accounting").items():
            names = [event_name(e) for e in events]
            if names[0] in AUTHORIZATION_STATES:
                authorizations[str(aggregate_id)] = names
            elif names[0] == "Account.Opened":
                account_authorized[events[0].consumer_id] = [
                    (e.order_id, e.amount_cents)
                    for e in events
                    if event_name(e) == "Account.Authorized"
                ]
        return cls(dict(orders), tickets, authorizations, account_authorized)


def final_state(events: list[str] | None, states: dict[str, str]) -> str | None:
    if not events:
        return None
    return next(states[name] for name in reversed(events) if name in states)


def outcomes(placed: list[PlacedOrder], facts: Facts) -> Check:
    """Every order ended as its inputs dictate: in the orders store (state, failed
    step), the kitchen's (its ticket's state, or no ticket) and the accounting's (its
    authorization, or none)."""
    check = Check("every order ended with the outcome its inputs dictate")
    ended: Counter[str] = Counter()
    for order in placed:
        what = f"order #{order.number} ({order.kind}, key {order.key})"
        if order.order_id is None:
            check.problems.append(f"{what}: never accepted; answers {dict(order.answers)}")
        stored = facts.orders.get(order.key, [])
        if not stored:
            if order.order_id is not None:
                check.problems.append(f"{what}: 201 with {order.order_id}, not in the store")
            continue
        first = stored[0]
        what = f"order #{order.number} {first.order_id} ({order.kind})"
        if order.order_id is not None and order.order_id not in {s.order_id for s in stored}:
            check.problems.append(f"{what}: the 201 said {order.order_id}")
        expected = order.expected
        if (first.state, first.failed_step) != (expected.status, expected.failed_step):
            check.problems.append(
                f"{what}: {first.state} (failed step {first.failed_step}), expected "
                f"{expected.status} (failed step {expected.failed_step}); events {first.events}"
            )
        ticket = final_state(facts.tickets.get(first.order_id), TICKET_STATES)
        if ticket != expected.ticket:
            check.problems.append(f"{what}: ticket {ticket}, expected {expected.ticket}")
        authorization = final_state(facts.authorizations.get(first.order_id), AUTHORIZATION_STATES)
        if authorization != expected.authorization:
            check.problems.append(
                f"{what}: authorization {authorization}, expected {expected.authorization}"
            )
        ended[order.kind] += 1
    check.summary = f"{len(placed)} orders: " + ", ".join(
        f"{count} {kind}" for kind, count in sorted(ended.items())
    )
    return check


def nothing_twice(placed: list[PlacedOrder], facts: Facts) -> Check:
    """No order, ticket or authorization twice: one Order per Idempotency-Key; no event
    twice in an order's, a ticket's or an authorization's history; no order authorized
    twice on an account."""
    check = Check("no order, ticket or authorization twice")
    keys = {order.key for order in placed}
    for key, stored in facts.orders.items():
        if len(stored) > 1:
            check.problems.append(
                f"{len(stored)} orders for Idempotency-Key {key}: "
                + ", ".join(s.order_id for s in stored)
            )
        if key not in keys:
            check.problems.append(f"order {stored[0].order_id} with unknown key {key}")
    histories = [
        *((f"order {s.order_id}", s.events) for group in facts.orders.values() for s in group),
        *((f"ticket {i}", events) for i, events in facts.tickets.items()),
        *((f"authorization {i}", events) for i, events in facts.authorizations.items()),
    ]
    for what, events in histories:
        twice = [name for name, count in Counter(events).items() if count > 1]
        if twice:
            check.problems.append(f"{what}: {', '.join(twice)} more than once ({events})")
    for consumer, authorized in facts.account_authorized.items():
        repeated = [i for i, count in Counter(o for o, _ in authorized).items() if count > 1]
        if repeated:
            check.problems.append(
                f"account {consumer}: orders authorized more than once: {', '.join(repeated)}"
            )
    check.summary = (
        f"{sum(len(s) for s in facts.orders.values())} orders, {len(facts.tickets)} tickets, "
        f"{len(facts.authorizations)} authorizations"
    )
    return check


def accounts(facts: Facts) -> Check:
    """Each account's authorized total equals the total of its consumer's approved
    orders (in the orders store)."""
    check = Check("each account's authorized total equals its approved orders")
    approved: Counter[str] = Counter()
    for group in facts.orders.values():
        for stored in group:
            if stored.state == "APPROVED":
                approved[stored.customer_id] += stored.total_cents
    for consumer, authorized in sorted(facts.account_authorized.items()):
        total = sum(cents for _, cents in authorized)
        if total != approved[consumer]:
            check.problems.append(
                f"account {consumer}: {total} cents authorized, approved orders "
                f"{approved[consumer]} cents"
            )
    check.summary = (
        f"{len(facts.account_authorized)} accounts, {sum(approved.values())} cents approved"
    )
    return check


async def read_models(placed: list[PlacedOrder], facts: Facts, db: AsyncDatabase[Any]) -> Check:
    """The query side shows every order's outcome: the orders read model (status,
    failed step, the saga's ticket and card) and the tickets read model."""
    check = Check("the read models show every order's outcome")
    catalog = Catalog(db)
    orders_live = (await catalog.live(_projection("orders"))).collection
    tickets_live = (await catalog.live(_projection("tickets"))).collection
    ids = {o.key: s[0].order_id for o in placed if (s := facts.orders.get(o.key))}
    documents = {d["_id"]: d async for d in db[orders_live].find({"_id": {"$in": [*ids.values()]}})}
    tickets = {d["_id"]: d async for d in db[tickets_live].find({"_id": {"$in": [*ids.values()]}})}
    for order in placed:
        if order.key not in ids:
            continue  # not in the store: `outcomes` says so
        order_id, expected = ids[order.key], order.expected
        what = f"order #{order.number} {order_id} ({order.kind})"
        document = documents.get(order_id)
        if document is None:
            check.problems.append(f"{what}: no document in {orders_live}")
            continue
        saga = document.get("saga") or {}
        shown = (
            document.get("status"),
            document.get("failed_step"),
            saga.get("ticket"),
            saga.get("card_authorization"),
        )
        wanted = (expected.status, expected.failed_step, expected.ticket, expected.authorization)
        if shown != wanted:
            check.problems.append(
                f"{what}: {orders_live} shows (status, failed step, ticket, card) {shown}, "
                f"expected {wanted}"
            )
        ticket = tickets.get(order_id)
        status = None if ticket is None else ticket.get("status")
        if status != expected.ticket:
            check.problems.append(
                f"{what}: {tickets_live} shows {status}, expected {expected.ticket}"
            )
    check.summary = f"{len(documents)} order documents, {len(tickets)} ticket documents"
    return check


def _projection(name: str) -> Any:
    return next(p for p in PROJECTIONS if p.name == name)


async def rebuilds(stores: Stores, db: AsyncDatabase[Any], bootstrap: str) -> Check:
    """Each read model equals a fresh rebuild from the stores, document for document:
    `cqrs replay --no-switch` (the same `Replay`, without the switch), then replay's own
    shadow check (it leaves out `_rev`, the count of writes); the build is dropped."""
    check = Check("each read model equals a fresh rebuild from the stores")
    logs = []
    for service in SERVICES:
        relay = importlib.import_module(f"write_side.{service}.relay")
        logs.append(store_log(service, stores.apps[service], relay.to_contract))
    catalog = Catalog(db)
    compared = []
    for projection in PROJECTIONS:
        options = ReplayOptions(source="stores", switch=False)
        summary = await Replay(projection, db, bootstrap, logs, options, QuietListener()).run()
        live = await catalog.live(projection)
        report = await shadow_check(db, live.collection, summary.collection)
        compared.append(f"{projection.name}: {report.compared} documents")
        if not report.equal:
            check.problems.append(
                f"{projection.name}: {live.collection} against the rebuild "
                f"{summary.collection}: {report.describe(limit=10)}"
            )
            for document_id in report.different[:3]:
                check.problems.append(
                    await _difference(db, live.collection, summary.collection, document_id)
                )
        else:
            await catalog.drop(summary.collection)
    check.summary = "; ".join(compared)
    return check


async def _difference(db: AsyncDatabase[Any], live: str, new: str, document_id: str) -> str:
    left = await db[live].find_one({"_id": document_id}) or {}
    right = await db[new].find_one({"_id": document_id}) or {}
    fields = sorted(k for k in {*left, *right} if k != "_rev" and left.get(k) != right.get(k))
    shown = "; ".join(f"{k}: live {left.get(k)!r}, rebuilt {right.get(k)!r}" for k in fields)
    return f"  {document_id}: {shown}"


async def published(stores: Stores, bootstrap: str) -> Check:
    """Every public event of each store is on its service's topic (by its CloudEvents
    id): an event missing there was lost between the store and the broker (the relay, or
    the broker), not by a consumer."""
    check = Check("every stored event is on its topic")
    counts = []
    for service in SERVICES:
        relay = importlib.import_module(f"write_side.{service}.relay")
        log = store_log(service, stores.apps[service], relay.to_contract)
        stored = {}
        for notification in await asyncio.to_thread(stores.notifications, service):
            envelope = log.envelope(notification)
            if envelope is not None:
                stored[envelope.id] = (notification.id, envelope)
        on_topic = await _topic_ids(bootstrap, service)
        missing = [stored[i] for i in stored.keys() - on_topic]
        for position, envelope in sorted(missing, key=lambda m: m[0]):
            check.problems.append(
                f"{service}: {envelope.type} of {envelope.subject} (position {position}, "
                f"version {envelope.aggregateversion}, {envelope.time:%H:%M:%S.%f}) is not "
                f"on the topic"
            )
        counts.append(f"{service} {len(stored)} events, {len(on_topic)} distinct on the topic")
    check.summary = "; ".join(counts)
    return check


async def _topic_ids(bootstrap: str, topic: str) -> set[str]:
    """The CloudEvents ids (`ce_id` headers) of every message of the topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    ids: set[str] = set()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    headers = dict(record.headers)
                    ids.add(headers["ce_id"].decode())
    finally:
        await consumer.stop()
    return ids


async def dead_letters(bootstrap: str) -> Check:
    check = Check("no dead letter")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in DEAD_LETTER_TOPICS
            for p in consumer.partitions_for_topic(topic) or {0}
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    for tp, end in sorted(ends.items()):
        if end:
            check.problems.append(f"{tp.topic}[{tp.partition}]: {end} dead letters")
    check.summary = f"{len(partitions)} dead-letter partitions"
    return check


async def lags(sample: Sample, db: AsyncDatabase[Any], bootstrap: str) -> Check:
    """Every relay's recorded position is its store's head; every consumer group has
    committed every partition's end; every projection's own progress is at the end."""
    check = Check("every lag back to 0")
    found = sample.lags()
    if found is None:
        check.problems.append("the broker did not answer: no offsets")
    else:
        for name, lag in found.items():
            if lag:
                check.problems.append(f"{name}: {lag} behind")
        for group in found:
            if group.endswith(" group"):
                per_partition = sample.group_lag(group.removesuffix(" group")) or {}
                behind = {f"{tp.topic}[{tp.partition}]": n for tp, n in per_partition.items() if n}
                if behind:
                    check.problems.append(f"  {group}: {behind}")
    for status in await projections_status(db, bootstrap):
        if status["lag_events"] != 0:
            check.problems.append(
                f"projection {status['projection']}: lag {status['lag_events']} events"
            )
    heads = ", ".join(f"{s} {sample.heads[s]}" for s in SERVICES)
    check.summary = f"store heads {heads}"
    return check
