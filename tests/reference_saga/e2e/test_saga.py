"""The createOrder saga end to end: every process of the four services running.

One system per module (SQLite stores, its own broker, a fresh read-model database);
each test uses its own consumers and restaurants, so the tests do not see each
other's orders.
"""

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from devstack import cli
from devstack.servers import KafkaBroker, free_port
from devstack.traces import Span, Trace, read_spans, render, trace_ids_for, trace_of
from kernel.kafka import ensure_topics
from tests import processes
from tests.integration.kafka_reading import read_all
from tests.metrics_scrape import scrape
from tests.metrics_scrape import value as metric_value
from tests.reference_saga.examples import DELIVERY_ADDRESS
from tests.support import bearer, wait_for

SERVICES = ("orders", "consumers", "kitchen", "accounting")
TOPICS = SERVICES
PIZZA = {"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}  # 2500 cents
TERMINAL = ("APPROVED", "REJECTED")


class System:
    def __init__(self, urls: dict[str, str], env: dict[str, str], log_dir: Path):
        self.urls = urls
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, processes.Process] = {}
        self.health_ports: dict[str, int] = {}
        """Each relay's and worker's health and metrics port (HEALTH_PORT)."""
        self.http = httpx.Client(timeout=30, headers=bearer())

    def metrics_url(self, name: str) -> str:
        """Where a process serves /metrics and /health/*: an API on its own port."""
        service, kind = name.rsplit("-", 1)
        if kind == "api":
            return self.urls[service]
        port = self.health_ports.setdefault(name, free_port())
        return f"http://127.0.0.1:{port}"

    def start(self, name: str, incarnation: int = 1) -> None:
        log_dir = self.log_dir if incarnation == 1 else self.log_dir / f"run-{incarnation}"
        log_dir.mkdir(exist_ok=True)
        env = self.env
        if not name.endswith("-api"):
            env = {**env, "HEALTH_PORT": self.metrics_url(name).rsplit(":", 1)[1]}
        self.running[name] = _process(name, self.urls, env, log_dir)

    def stop(self, name: str) -> None:
        """SIGTERM: the worker leaves its consumer group and exits."""
        self.running[name].stop()

    def logs(self) -> str:
        return processes.logs(*self.running.values())

    def post(self, service: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(f"{self.urls[service]}{path}", json=body or {})

    def get(self, service: str, path: str) -> httpx.Response:
        return self.http.get(f"{self.urls[service]}{path}")

    # The domain's set-up, through the services' own command APIs.

    def consumer(self, credit_limit_cents: int = 1_000_000, active: bool = True) -> str:
        consumer_id = f"cust-{uuid.uuid4().hex[:8]}"
        assert (
            self.post(
                "consumers", "/consumers", {"consumer_id": consumer_id, "name": "Ann"}
            ).status_code
            == 201
        )
        assert (
            self.post(
                "accounting",
                "/accounts",
                {
                    "consumer_id": consumer_id,
                    "credit_limit_cents": credit_limit_cents,
                },
            ).status_code
            == 201
        )
        if not active:
            response = self.post(
                "consumers", f"/consumers/{consumer_id}/deactivate", {"reason": "moved away"}
            )
            assert response.status_code == 200, response.text
        return consumer_id

    def restaurant(self, open_: bool = True) -> str:
        restaurant_id = f"rest-{uuid.uuid4().hex[:8]}"
        response = self.post(
            "kitchen",
            "/restaurants",
            {
                "restaurant_id": restaurant_id,
                "name": "Luigi's",
                "menu": ["pizza", "soda"],
            },
        )
        assert response.status_code == 201, response.text
        if not open_:
            assert self.post("kitchen", f"/restaurants/{restaurant_id}/close").status_code == 200
        return restaurant_id

    def place(self, consumer_id: str, restaurant_id: str, items: list[dict] | None = None) -> str:
        response = self.post(
            "orders",
            "/orders",
            {
                "customer_id": consumer_id,
                "restaurant_id": restaurant_id,
                "delivery_address": DELIVERY_ADDRESS,
                "line_items": items or [PIZZA],
            },
        )
        assert response.status_code == 201, response.text
        order_id: str = response.json()["order_id"]
        return order_id

    def order(self, order_id: str) -> dict[str, Any] | None:
        response = self.get("query", f"/orders/{order_id}")
        return response.json() if response.status_code == 200 else None

    def finished(self, order_id: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until the order's saga has ended and its last step is visible: the
        kitchen's ticket (approved, or cancelled as compensation) included."""

        def ended() -> dict[str, Any] | None:
            order = self.order(order_id)
            if order is None or order["status"] not in TERMINAL:
                return None
            saga = order["saga"]
            if saga["card_authorization"] == "FAILED" and saga["ticket"] != "CANCELLED":
                return None  # the kitchen's compensation has not shown yet
            if order["status"] == "APPROVED" and saga["ticket"] != "AWAITING_ACCEPTANCE":
                return None  # the kitchen reacts to the card in parallel with orders
            return order

        try:
            return wait_for(ended, timeout=timeout, interval=0.2)
        except TimeoutError:
            pytest.fail(f"order {order_id} never ended: {self.order(order_id)}\n{self.logs()}")


def _process(name: str, urls: dict[str, str], env: dict[str, str], log_dir: Path):
    service, kind = name.rsplit("-", 1)
    if kind == "api":
        factory = (
            "read_side.api:create_app"
            if service == "query"
            else (f"write_side.{service}.api:create_app")
        )
        port = int(urls[service].rsplit(":", 1)[1])
        return processes.api(name, factory, port, env, log_dir)
    if kind == "relay":
        return processes.relay(env, log_dir, name=name, service=service)
    if kind == "saga":
        return processes.faust_worker(name, f"write_side.{service}.saga:app", env, log_dir)
    return processes.projections_worker(env, log_dir)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, mongo_url: str) -> Iterator[System]:
    log_dir = tmp_path_factory.mktemp("saga")
    broker = KafkaBroker(log_dir / "kafka").start()
    asyncio.run(ensure_topics(broker.bootstrap, {topic: 4 for topic in TOPICS}))
    urls = {service: f"http://127.0.0.1:{free_port()}" for service in (*SERVICES, "query")}
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": f"saga_{uuid.uuid4().hex[:8]}",
        "PROJECTIONS_GROUP_ID": f"projections-{uuid.uuid4().hex[:8]}",
        "READ_YOUR_WRITES_TIMEOUT": "10",
        # Every process's spans as OTLP JSON lines, exported often (test_one_order_is_one_trace).
        "OTEL_TRACES_EXPORTER": "otlp_json_file",
        "TRACES_DIR": str(log_dir / "traces"),
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        **{f"{s.upper()}_DATABASE_URL": f"sqlite:///{log_dir}/{s}.db" for s in SERVICES},
    }
    running = System(urls, env, log_dir)
    names = [f"{s}-{kind}" for s in SERVICES for kind in ("api", "relay", "saga")]
    try:
        for name in [*names, "projections-worker", "query-api"]:
            running.start(name)
        for service, url in urls.items():
            try:
                wait_for(
                    lambda url=url: httpx.get(f"{url}/health").raise_for_status(),
                    timeout=90,
                    ignore=(httpx.TransportError, httpx.HTTPStatusError),
                )
            except TimeoutError as error:
                pytest.fail(f"{service} never became healthy ({error})\n{running.logs()}")
        yield running
    finally:
        processes.stop_all(running.running.values())
        broker.stop()


def test_every_path_ends_with_the_compensations_it_requires(system):
    ok, poor = system.consumer(), system.consumer(credit_limit_cents=1000)
    gone = system.consumer(active=False)
    open_, closed = system.restaurant(), system.restaurant(open_=False)

    approved = system.place(ok, open_)
    unknown_consumer = system.place("cust-nobody", open_)
    deactivated = system.place(gone, open_)
    kitchen_closed = system.place(ok, closed)
    not_on_menu = system.place(ok, open_, [{**PIZZA, "menu_item_id": "sushi"}])
    over_limit = system.place(poor, open_)

    order = system.finished(approved)
    assert order["status"] == "APPROVED"
    assert order["saga"] == {
        "state": "APPROVED",
        "consumer_verification": "VERIFIED",
        "ticket": "AWAITING_ACCEPTANCE",
        "card_authorization": "AUTHORIZED",
        "failed_step": None,
        "reason": None,
    }
    assert order["timeline"][0]["service"] == "orders"
    assert len(order["timeline"]) == 6

    for order_id, reason in [(unknown_consumer, "not registered"), (deactivated, "deactivated")]:
        order = system.finished(order_id)
        assert (order["status"], order["failed_step"]) == ("REJECTED", "consumers")
        assert reason in order["rejection_reason"]
        assert order["saga"]["ticket"] is None and order["saga"]["card_authorization"] is None

    for order_id, reason in [(kitchen_closed, "closed"), (not_on_menu, "sushi")]:
        order = system.finished(order_id)
        assert (order["status"], order["failed_step"]) == ("REJECTED", "kitchen")
        assert reason in order["rejection_reason"]
        assert order["saga"]["ticket"] == "REJECTED"
        assert order["saga"]["card_authorization"] is None

    order = system.finished(over_limit)
    assert (order["status"], order["failed_step"]) == ("REJECTED", "accounting")
    assert "credit limit" in order["rejection_reason"]
    assert order["saga"]["ticket"] == "CANCELLED"  # the compensation
    assert system.get("kitchen", f"/tickets/{over_limit}").json()["state"] == "CANCELLED"

    # Only the approved order was charged.
    assert system.get("accounting", f"/accounts/{ok}").json()["authorized_total_cents"] == 2500
    assert system.get("accounting", f"/accounts/{poor}").json()["authorized_total_cents"] == 0


def test_every_process_is_ready_and_its_metrics_move_with_a_known_workload(system):
    """Scrapes each real process's /metrics before and after one approved order, one the
    kitchen rejects and one unreadable message on the orders topic."""
    names = [*system.running]
    for name in names:
        url = system.metrics_url(name)
        assert httpx.get(f"{url}/health/live").status_code == 200, name
        wait_for(
            lambda url=url: httpx.get(f"{url}/health/ready").status_code == 200,
            timeout=30,
            message=f"{name} never ready: {httpx.get(f'{url}/health/ready').text}",
        )
    before = {name: scrape(system.metrics_url(name)) for name in names}

    def moved(name: str, metric: str, **labels: str) -> float:
        key = (metric, frozenset(labels.items()))
        now = scrape(system.metrics_url(name)).get(key, 0.0)
        return now - before[name].get(key, 0.0)

    consumer, open_, closed = system.consumer(), system.restaurant(), system.restaurant(False)
    approved, rejected = system.place(consumer, open_), system.place(consumer, closed)
    asyncio.run(_send_raw(system.env["KAFKA_BOOTSTRAP_SERVERS"], "orders", b"not an envelope"))
    assert system.finished(approved)["status"] == "APPROVED"
    assert system.finished(rejected)["failed_step"] == "kitchen"

    created = {"app": "orders-api", "method": "POST", "route": "/orders", "status": "201"}
    assert moved("orders-api", "cqrs_http_requests_total", **created) == 2
    timed = {"app": "orders-api", "method": "POST", "route": "/orders"}
    assert moved("orders-api", "cqrs_http_request_duration_seconds_count", **timed) == 2
    assert moved("orders-api", "cqrs_commands_total", service="orders", outcome="ok") == 2
    assert moved("orders-api", "cqrs_group_commit_batch_size_count", service="orders") >= 1
    read = {"app": "query-api", "method": "GET", "route": "/orders/{order_id}", "status": "200"}
    assert moved("query-api", "cqrs_http_requests_total", **read) >= 2

    # orders: 2 placed, 1 approved, 1 rejected; the relay's position passed them all
    wait_for(
        lambda: moved("orders-relay", "cqrs_relay_published_events_total", topic="orders") == 4
    )
    wait_for(lambda: value(system, "orders-relay", "cqrs_relay_lag_events", topic="orders") == 0)
    assert value(system, "orders-relay", "cqrs_relay_leader", topic="orders") == 1

    ended = {"saga": "createOrder"}
    assert moved("orders-saga", "cqrs_sagas_ended_total", **ended, outcome="approved") == 1
    assert moved("orders-saga", "cqrs_sagas_ended_total", **ended, outcome="rejected-kitchen") == 1
    duration = "cqrs_saga_duration_seconds_count"
    assert moved("orders-saga", duration, **ended, outcome="approved") == 1
    # the saga's commands (approve, reject) in the saga worker's own process
    assert moved("orders-saga", "cqrs_commands_total", service="orders", outcome="ok") == 2
    assert moved("orders-saga", "cqrs_reactions_total", consumer="orders-saga", outcome="done") >= 2

    # the unreadable message: dead-lettered by each of its consumers, with its kind
    malformed = {"topic": "orders", "kind": "malformed"}
    wait_for(
        lambda: (
            moved(
                "consumers-saga", "cqrs_dead_letters_total", consumer="consumers-saga", **malformed
            )
            == 1
        )
    )
    wait_for(
        lambda: (
            moved(
                "projections-worker",
                "cqrs_dead_letters_total",
                consumer="projections.orders",
                **malformed,
            )
            == 1
        )
    )
    assert (
        moved(
            "consumers-saga",
            "cqrs_reactions_total",
            consumer="consumers-saga",
            outcome="dead-lettered",
        )
        == 1
    )
    written = {"projection": "orders", "outcome": "written"}
    assert moved("projections-worker", "cqrs_projection_writes_total", **written) >= 2

    # consumer lag per topic and partition, back to 0 once all is handled
    reads = {"kitchen-saga": {"consumers", "accounting"}, "projections-worker": {"orders"}}
    for worker, group in [("kitchen-saga", "kitchen-saga"), ("projections-worker", None)]:

        def lags(worker: str = worker, group: str | None = group) -> dict[tuple[str, str], float]:
            return {
                (dict(labels)["topic"], dict(labels)["partition"]): sample
                for (name, labels), sample in scrape(system.metrics_url(worker)).items()
                if name == "cqrs_consumer_lag_messages"
                and (group is None or dict(labels)["group"] == group)
            }

        wait_for(lambda lags=lags: lags() and set(lags().values()) == {0}, timeout=30)
        assert {topic for topic, _ in lags()} >= reads[worker], lags()
        assert {topic for topic, _ in lags()} <= set(TOPICS), lags()  # Faust's own: none
        assert {partition for _, partition in lags()} <= {"0", "1", "2", "3"}


def value(system: System, name: str, metric: str, **labels: str) -> float | None:
    return metric_value(system.metrics_url(name), metric, **labels)


async def _send_raw(bootstrap: str, topic: str, data: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, data, key=b"garbage")
    finally:
        await producer.stop()


SAGA_PROCESSES = {"orders-api", *(f"{s}-saga" for s in SERVICES), "projections"}
RELAYS = {f"{s}-relay" for s in SERVICES}
"""Each relay's batch span is linked to the order's trace; it ends (and is exported) once
the broker has acknowledged the batch, so it may come after the projection's write."""


@pytest.fixture(scope="module")
def traced_order(system: System) -> tuple[str, Trace, list[Span]]:
    """An approved order, once its trace holds every process's spans down to the
    projection's write of OrderApproved, the relays' batch spans linked to it, and the
    parent of each span (a process exports a span when it ends, so a child can be
    written before its parent: the trace is read again until none is missing)."""
    order_id = system.place(system.consumer(), system.restaurant())
    assert system.finished(order_id)["status"] == "APPROVED"

    def complete() -> tuple[Trace, list[Span]] | None:
        spans = read_spans(system.log_dir / "traces")
        trace_ids = trace_ids_for(spans, order_id)
        if not trace_ids:
            return None
        trace = trace_of(spans, trace_ids[0])
        linked = {s.service for spans_ in trace.linked.values() for s in spans_}
        wrote_approval = any(
            s.service == "projections" and "OrderApproved" in s.name for s in trace.spans
        )
        ids = {span.span_id for span in trace.spans}
        closed = all(span.parent_id is None or span.parent_id in ids for span in trace.spans)
        if SAGA_PROCESSES <= trace.services() and wrote_approval and RELAYS <= linked and closed:
            return trace, spans
        return None

    try:
        trace, spans = wait_for(complete, timeout=30, interval=0.2)
    except TimeoutError:
        spans = read_spans(system.log_dir / "traces")
        found = [trace_of(spans, t) for t in trace_ids_for(spans, order_id)]
        shown = "\n\n".join("\n".join(render(trace)) for trace in found[:3])
        pytest.fail(f"order {order_id}: no complete trace; {len(found)} about it:\n{shown}")
    return order_id, trace, spans


def test_one_order_is_one_trace_through_every_service_and_the_projection(traced_order, system):
    order_id, trace, spans = traced_order
    by_id = {span.span_id: span for span in trace.spans}

    # One order, one trace: every span about the order is in it.
    assert trace_ids_for(spans, order_id) == [trace.trace_id]
    # Its root is the HTTP command; every other span's parent is in the trace.
    [root] = [span for span in trace.spans if span.parent_id is None]
    assert (root.service, root.name) == ("orders-api", "POST /orders")
    assert all(span.parent_id in by_id for span in trace.spans if span is not root)

    def ancestors(span: Span) -> list[Span]:
        chain = []
        while span.parent_id is not None:
            span = by_id[span.parent_id]
            chain.append(span)
        return chain

    def handling(process: str, event: str) -> list[Span]:
        return [s for s in trace.spans if s.service == process and event in s.name]

    def step(process: str, event: str, after: list[Span]) -> Span:
        """The span of ``process`` handling ``event`` that descends from one of ``after``
        (a major published twice is handled twice, the second time with no effect)."""
        wanted = {a.span_id for a in after}
        [span] = [s for s in handling(process, event) if {a.span_id for a in ancestors(s)} & wanted]
        return span

    # Each saga step descends from the step whose event it handles.
    created = step("consumers-saga", "orders.OrderCreated.v2", [root])
    verified = step("kitchen-saga", "consumers.ConsumerVerified", [created])
    ticket = step("accounting-saga", "kitchen.TicketCreated", [verified])
    authorized = step("orders-saga", "accounting.CardAuthorized", [ticket])
    # ... down to the projection's write of the approval, the child of the step approving.
    [approval] = handling("projections", "orders.OrderApproved")
    assert approval.parent_id == authorized.span_id

    # The relays' and consumers' batch spans are roots of their own traces, linked to it.
    linked = [span for spans_ in trace.linked.values() for span in spans_]
    relays = [span for span in linked if span.service.endswith("-relay")]
    assert {span.service for span in relays} >= RELAYS
    assert all(span.parent_id is None and span.name.startswith("publish ") for span in relays)
    assert all(span.trace_id != trace.trace_id for span in linked)
    assert any(span.service == "projections" and span.name.endswith(" batch") for span in linked)

    # The saga's end is one JSON log line with the trace's ids and the correlation id.
    lines = [
        json.loads(line)
        for line in (system.log_dir / "orders-saga.log").read_text().splitlines()
        if line.startswith("{") and order_id in line
    ]
    [ended] = [line for line in lines if line["message"].startswith("saga ended")]
    assert (ended["outcome"], ended["trace_id"]) == ("approved", trace.trace_id)
    assert ended["span_id"] == authorized.span_id
    assert ended["correlation_id"] == created.attributes["cqrs.correlation_id"]


def test_cqrs_trace_prints_the_tree_of_a_real_order(traced_order, system, capsys):
    order_id, trace, _ = traced_order

    assert cli.main(["trace", order_id, "--dir", str(system.log_dir / "traces")]) == 0
    printed = capsys.readouterr().out.splitlines()

    # Spans may still have come in since the fixture read them (a step's batch retried).
    shown = re.match(rf"^trace {trace.trace_id}: (\d+) spans", printed[0])
    assert shown, printed[0]
    later = trace_of(read_spans(system.log_dir / "traces"), trace.trace_id)
    assert len(trace.spans) <= int(shown[1]) <= len(later.spans)
    assert re.match(r"^\s+0\.0ms\s+\d+\.\dms\s+orders-api\s+POST /orders$", printed[2])
    tree = "\n".join(printed)
    for process in SAGA_PROCESSES:
        assert f" {process} " in tree
    assert re.search(r"orders-relay\s+ +~> publish orders \(a batch of \d+", tree)
    # Deeper steps are indented further: the approval's write under the orders saga's step.
    [step] = [line for line in printed if "orders-saga accounting.CardAuthorized" in line]
    [write] = [line for line in printed if "projection orders orders.OrderApproved" in line]
    assert write.index("projection orders") > step.index("orders-saga accounting")


def test_a_cancel_while_the_saga_runs_is_refused_and_allowed_once_approved(system):
    consumer, restaurant = system.consumer(), system.restaurant()
    # Without accounting the saga cannot end: the order is surely still pending.
    system.stop("accounting-saga")
    try:
        order_id = system.place(consumer, restaurant)
        refused = system.post("orders", f"/orders/{order_id}/cancel", {"reason": "changed my mind"})
        assert refused.status_code == 409, refused.text
        assert "saga is still in progress" in refused.json()["detail"]
    finally:
        system.start("accounting-saga", incarnation=3)  # its logs apart from the others

    assert system.finished(order_id)["status"] == "APPROVED"
    response = system.post("orders", f"/orders/{order_id}/cancel", {"reason": "changed my mind"})
    assert response.status_code == 200, response.text
    wait_for(lambda: (system.order(order_id) or {}).get("status") == "CANCELLED", timeout=60)


def test_duplicated_messages_have_no_second_effect(system):
    consumer, restaurant = system.consumer(), system.restaurant()
    order_id = system.place(consumer, restaurant)
    before = system.finished(order_id)
    account = system.get("accounting", f"/accounts/{consumer}").json()
    ticket = system.get("kitchen", f"/tickets/{order_id}").json()
    order = system.get("orders", f"/orders/{order_id}").json()

    # Every message of the saga delivered again to every participant, at new offsets.
    bootstrap = system.env["KAFKA_BOOTSTRAP_SERVERS"]
    asyncio.run(_republish(bootstrap, order_id))
    asyncio.run(_wait_until_consumed(bootstrap, [f"{s}-saga" for s in SERVICES]))

    assert system.get("accounting", f"/accounts/{consumer}").json() == account  # no 2nd charge
    assert system.get("kitchen", f"/tickets/{order_id}").json() == ticket  # no 2nd ticket
    assert system.get("orders", f"/orders/{order_id}").json() == order
    after = system.order(order_id)
    assert after is not None
    assert (after["saga"], len(after["timeline"])) == (before["saga"], len(before["timeline"]))


def test_a_participant_stopped_mid_flow_catches_up_when_started(system):
    consumer, restaurant = system.consumer(), system.restaurant()
    system.stop("accounting-saga")
    try:
        orders = [system.place(consumer, restaurant) for _ in range(5)]
        # The saga reaches the card step and waits there.
        wait_for(
            lambda: all(
                (o := system.order(i)) and o["saga"]["ticket"] == "CREATE_PENDING" for i in orders
            ),
            timeout=120,
            interval=0.2,
        )
        stuck = system.get("query", "/sagas/stuck?older_than=0.001&limit=100").json()
        assert set(orders) <= {o["order_id"] for o in stuck["items"]}
    finally:
        system.start("accounting-saga", incarnation=2)
    for order_id in orders:
        assert system.finished(order_id)["status"] == "APPROVED"
    total = system.get("accounting", f"/accounts/{consumer}").json()["authorized_total_cents"]
    assert total == 5 * 2500


def test_a_hundred_concurrent_orders_all_end_and_the_totals_agree(system):
    rich = [system.consumer() for _ in range(3)]
    limited = system.consumer(credit_limit_cents=10 * 2500)  # room for 10 of its 30 orders
    gone = system.consumer(active=False)
    open_, closed = system.restaurant(), system.restaurant(open_=False)
    plan = (
        [(c, open_) for c in rich for _ in range(17)]  # 51
        + [(limited, open_)] * 30
        + [(gone, open_)] * 10
        + [(rich[0], closed)] * 9
    )
    assert len(plan) == 100
    with ThreadPoolExecutor(16) as pool:
        order_ids = list(pool.map(lambda p: system.place(*p), plan))

    ended = [system.finished(order_id, timeout=300) for order_id in order_ids]
    by_status = {status: [o for o in ended if o["status"] == status] for status in TERMINAL}
    assert len(by_status["APPROVED"]) == 51 + 10
    approved_total = sum(o["total_cents"] for o in by_status["APPROVED"])
    authorized_total = sum(
        system.get("accounting", f"/accounts/{c}").json()["authorized_total_cents"]
        for c in [*rich, limited, gone]
    )
    assert authorized_total == approved_total
    for order in by_status["REJECTED"]:
        if order["failed_step"] == "accounting":
            assert order["saga"]["ticket"] == "CANCELLED"


async def _republish(bootstrap: str, order_id: str) -> None:
    """Publish every message of the order's saga once more, at new offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic in TOPICS:
            for record in await read_all(bootstrap, topic):
                if order_id.encode() in (record.value or b""):
                    await producer.send_and_wait(
                        topic, record.value, key=record.key, headers=list(record.headers)
                    )
    finally:
        await producer.stop()


async def _wait_until_consumed(bootstrap: str, groups: list[str], timeout: float = 60) -> None:
    """Poll until each consumer group has committed the end of every partition it reads."""
    from aiokafka import AIOKafkaConsumer

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            lagging = []
            for group in groups:
                committed = await admin.list_consumer_group_offsets(group)
                ends = await consumer.end_offsets(list(committed))
                lagging += [tp for tp, meta in committed.items() if meta.offset < ends[tp]]
            if not lagging:
                return
            assert loop.time() < deadline, f"still lagging: {lagging}"
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
        await admin.close()
