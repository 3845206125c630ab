"""saga: order placed → APPROVED in the read model, at a fixed offered load.

All four services run as deployed, 14 processes (an API, a relay and a saga worker per
service, the projections worker, the query API), on SQLite, with a broker of their
own. One consumer with a large credit limit and one open restaurant are set up through
the command APIs; then `POST /orders` is offered at a fixed rate (open loop) and each
order is timed from its 201 until the read model shows it APPROVED (`bench.flows`).

Reference: a bare aiokafka message through five topics of the same broker at the same
rate: the five hops an approved order's events make (OrderCreated, ConsumerVerified,
TicketCreated, CardAuthorized, OrderApproved). Each hop of the system adds a relay's
wake-up on its store's commit (a `PRAGMA data_version` check every 5 ms on SQLite; the
50 ms poll is only the fallback, ADR 21), a Faust worker's batch and a store write.
"""

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench import charts, flows, profiling, stack, stats
from bench.scenario import BenchContext, Measurement, ScenarioResult
from devstack import processes
from devstack.servers import free_port

SERVICES = ("orders", "consumers", "kitchen", "accounting")
HOPS = 5


@contextlib.contextmanager
def saga_system(context: BenchContext, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Every process of the four services; their URLs by service (and "query")."""
    work = context.work_dir
    urls = {service: f"http://127.0.0.1:{free_port()}" for service in (*SERVICES, "query")}
    with stack.System(env, work) as system:
        for service in SERVICES:
            port = int(urls[service].rsplit(":", 1)[1])
            factory = f"write_side.{service}.api:create_app"
            system.start(processes.api(f"{service}-api", factory, port, env, work))
            system.start(processes.relay(env, work, name=f"{service}-relay", service=service))
            profile = work / f"{service}-saga.pyisession" if service == "kitchen" else None
            saga_app = f"write_side.{service}.saga:app"
            system.start(
                processes.faust_worker(f"{service}-saga", saga_app, env, work, profile=profile)
            )
        system.start(processes.projections_worker(env, work))
        port = int(urls["query"].rsplit(":", 1)[1])
        system.start(processes.api("query-api", "read_side.api:create_app", port, env, work))
        system.wait_healthy(*urls.values(), timeout=180)
        yield urls
        system.check_alive()


def set_up(urls: dict[str, str]) -> tuple[str, str]:
    """A consumer who can pay for every order, and an open restaurant serving pizza."""
    consumer_id, restaurant_id = f"cust-{uuid.uuid4().hex[:8]}", f"rest-{uuid.uuid4().hex[:8]}"
    requests = [
        (urls["consumers"], "/consumers", {"consumer_id": consumer_id, "name": "Ann"}),
        (
            urls["accounting"],
            "/accounts",
            {"consumer_id": consumer_id, "credit_limit_cents": 1_000_000_000},
        ),
        (
            urls["kitchen"],
            "/restaurants",
            {"restaurant_id": restaurant_id, "name": "Luigi's", "menu": ["pizza"]},
        ),
    ]
    for url, path, body in requests:
        response = httpx.post(f"{url}{path}", json=body, timeout=30)
        response.raise_for_status()
    return consumer_id, restaurant_id


async def _run(context: BenchContext) -> ScenarioResult:
    rate, seconds = (2, 2.0) if context.quick else (4, 15.0)
    count = int(rate * seconds)
    result = ScenarioResult("Saga: order placed → APPROVED")
    env = {
        "MONGODB_URL": context.mongo_url,
        "MONGODB_DATABASE": f"bench_{uuid.uuid4().hex[:8]}",
        "PROJECTIONS_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "PROJECTIONS_DATA_DIR": str(context.work_dir / "faust"),
        **{f"{s.upper()}_DATABASE_URL": f"sqlite:///{context.work_dir}/{s}.db" for s in SERVICES},
    }
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(context.mongo_url)
    try:
        with stack.system_broker(context.work_dir / "kafka") as broker:
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
            with saga_system(context, env) as urls:
                customer, restaurant = await asyncio.to_thread(set_up, urls)
                orders = client[env["MONGODB_DATABASE"]]["orders"]
                approved = {"status": "APPROVED"}
                # Warm-up: every worker's partitions assigned, every connection open.
                await flows.place_orders(
                    urls["orders"],
                    orders,
                    approved,
                    rate=2,
                    count=2,
                    customer_id=customer,
                    restaurant_id=restaurant,
                    drain_timeout=180,
                )
                flow = await flows.place_orders(
                    urls["orders"],
                    orders,
                    approved,
                    rate=rate,
                    count=count,
                    customer_id=customer,
                    restaurant_id=restaurant,
                )
                chain = await flows.raw_hops(broker.bootstrap, HOPS, rate, count)
    finally:
        await client.close()
    result.measurements += [
        Measurement(
            what=f"{rate} orders/s offered for {seconds:g} s: placed → APPROVED",
            value=stats.percentile(flow.effect, 50) * 1000,
            unit="ms (p50)",
            baseline_name=f"raw aiokafka, {HOPS} hops",
            baseline=stats.percentile(chain, 50) * 1000,
            **stats.percentiles_ms(flow.effect),
        ),
        Measurement(
            what=f"{rate} orders/s offered: POST /orders answered "
            f"({flow.accepted.rate:.1f}/s achieved, {flow.accepted.errors} errors)",
            value=stats.percentile(flow.accepted.latencies, 50) * 1000,
            unit="ms (p50)",
            **stats.percentiles_ms(flow.accepted.latencies),
        ),
    ]
    chain_p = stats.percentiles_ms(chain)
    kitchen = profiling.load(context.work_dir / "kitchen-saga.pyisession")
    result.notes += [
        (
            f"{len(flow.effect)} orders approved, {flow.missing} not approved within the deadline; "
            f"raw {HOPS}-hop p50/p95/p99 {chain_p['p50_ms']:.1f}/{chain_p['p95_ms']:.1f}/"
            f"{chain_p['p99_ms']:.1f} ms."
        ),
        "14 processes share the 2 cores with the broker, SecantusDB and the load generator.",
        "Profile of the kitchen saga worker (pyinstrument, 10 ms sampling, while measured): "
        + profiling.summary(kitchen),
    ]
    if saturated := flow.saturation(rate):
        result.notes.append(f"{saturated}.")
    result.charts.append(
        charts.latency_histogram(
            context.image_dir / "saga-latency.png",
            f"Order placed → APPROVED at {rate} orders/s",
            {"saga": flow.effect, f"raw aiokafka, {HOPS} hops": chain},
        )
    )
    return result


def run(context: BenchContext) -> ScenarioResult:
    return asyncio.run(_run(context))
