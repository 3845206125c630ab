"""end-to-end: command accepted → visible in the query API, at fixed offered loads.

The orders service runs as deployed (its API, its relay, the projections worker, the
query API), on SQLite and on PostgreSQL, each system with a broker of its own.
`POST /orders` is offered at 50 and at 200 commands/s (open loop); the latency of each
order runs from its 201 until its document is visible in the read model the query
API serves (see `bench.flows`). A sample of the orders is then read through the
query API itself.

Reference: a bare aiokafka message through one topic of the same broker at the same
rate, the one hop the event makes. The system adds, by design, the relay's wake-up on
the commit (NOTIFY on PostgreSQL, a `PRAGMA data_version` check every 5 ms on SQLite;
its 50 ms poll is only the fallback, ADR 21), the projections worker's batch (what
has arrived; none waits to fill) and two stores' writes.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient

from bench import charts, flows, profiling, stack, stats
from bench import http as bench_http
from bench.scenario import BenchContext, Measurement, ScenarioResult
from devstack import processes
from devstack.servers import free_port


@dataclass(frozen=True)
class Running:
    orders_url: str
    query_url: str
    bootstrap: str
    database: str


@contextlib.asynccontextmanager
async def orders_system(context: BenchContext, store: str) -> AsyncIterator[Running]:
    work = context.work_dir / store.lower()
    work.mkdir(exist_ok=True)
    with contextlib.ExitStack() as exit_stack:
        broker = exit_stack.enter_context(stack.system_broker(work / "kafka"))
        env = {
            **stack.system_env(broker, context.mongo_url, work),
            "ORDERS_DATABASE_URL": f"sqlite:///{work}/orders.db",
        }
        if store == "PostgreSQL":
            schema = exit_stack.enter_context(stack.postgres_schema(context.postgres_url))
            env |= {"ORDERS_DATABASE_URL": context.postgres_url, "ORDERS_DATABASE_SCHEMA": schema}
        system = exit_stack.enter_context(stack.System(env, work))
        orders_port, query_port = free_port(), free_port()
        system.start(
            processes.api("orders-api", "write_side.orders.api:create_app", orders_port, env, work)
        )
        system.start(processes.relay(env, work, profile=work / "relay.pyisession"))
        system.start(
            processes.projections_worker(env, work, profile=work / "projections.pyisession")
        )
        system.start(processes.api("query-api", "read_side.api:create_app", query_port, env, work))
        urls = f"http://127.0.0.1:{orders_port}", f"http://127.0.0.1:{query_port}"
        await asyncio.to_thread(system.wait_healthy, *urls)
        yield Running(*urls, broker.bootstrap, env["MONGODB_DATABASE"])
        system.check_alive()


async def read_back(query_url: str, ids: list[str]) -> int:
    """How many of `ids` the query API serves (200)."""
    async with bench_http.client(query_url, connections=1) as http:
        answers = [await bench_http.get_json(http, f"/orders/{order_id}") for order_id in ids]
    return sum(answer is not None for answer in answers)


async def measure_store(
    context: BenchContext, store: str, loads: list[tuple[int, float]], result: ScenarioResult
) -> dict[str, list[float]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(context.mongo_url)
    latencies: dict[str, list[float]] = {}
    work = context.work_dir / store.lower()
    try:
        async with orders_system(context, store) as running:
            orders = client[running.database]["orders"]
            visible = {"created_position": {"$ne": None}}
            # Warm-up: the first order waits for the projection's partitions to be assigned.
            await flows.place_orders(
                running.orders_url,
                orders,
                visible,
                rate=5,
                count=5,
                customer_id="warm-up",
                restaurant_id="restaurant-1",
            )
            for rate, seconds in loads:
                count = int(rate * seconds)
                flow = await flows.place_orders(
                    running.orders_url,
                    orders,
                    visible,
                    rate=rate,
                    count=count,
                    customer_id=f"customer-{rate}",
                    restaurant_id="restaurant-1",
                )
                hop = await flows.raw_hops(running.bootstrap, 1, rate, count)
                ids = [
                    d["_id"]
                    async for d in orders.find({"customer_id": f"customer-{rate}"}).limit(50)
                ]
                served = await read_back(running.query_url, ids)
                result.measurements += [
                    Measurement(
                        what=f"{store}, {rate} commands/s offered for {seconds:g} s: "
                        "command accepted → visible",
                        value=stats.percentile(flow.effect, 50) * 1000,
                        unit="ms (p50)",
                        baseline_name="raw aiokafka, one hop",
                        baseline=stats.percentile(hop, 50) * 1000,
                        **stats.percentiles_ms(flow.effect),
                    ),
                    Measurement(
                        what=f"{store}, {rate} commands/s offered: POST /orders answered "
                        f"({flow.accepted.rate:.0f}/s achieved, {flow.accepted.errors} errors)",
                        value=stats.percentile(flow.accepted.latencies, 50) * 1000,
                        unit="ms (p50)",
                        **stats.percentiles_ms(flow.accepted.latencies),
                    ),
                ]
                hop_p = stats.percentiles_ms(hop)
                result.notes.append(
                    f"{store} at {rate}/s: {len(flow.effect)} orders seen, {flow.missing} never "
                    f"seen within the deadline; {served} of {len(ids)} read back through the "
                    f"query API; raw one-hop p50/p95/p99 {hop_p['p50_ms']:.1f}/"
                    f"{hop_p['p95_ms']:.1f}/{hop_p['p99_ms']:.1f} ms."
                )
                if saturated := flow.saturation(rate):
                    result.notes.append(f"{store}: {saturated}.")
                latencies[f"{store}, {rate}/s"] = flow.effect
    finally:
        await client.close()
    result.notes += [
        (
            f"Profile of the {store} run's relay: "
            f"{profiling.summary(profiling.load(work / 'relay.pyisession'))}"
        ),
        (
            f"Profile of the {store} run's projections worker: "
            f"{profiling.summary(profiling.load(work / 'projections.pyisession'))}"
        ),
    ]
    return latencies


async def run(context: BenchContext) -> ScenarioResult:
    result = ScenarioResult("End to end: command accepted → visible in the query API")
    loads = [(10, 1.0)] if context.quick else [(50, 10.0), (200, 6.0)]
    # A quick run skips PostgreSQL: one system started, not two.
    latencies: dict[str, list[float]] = {}
    for store in stack.stores(context, result.notes, postgres=not context.quick):
        latencies |= await measure_store(context, store, loads, result)
    result.notes.append(
        "The relay and the projections worker ran under pyinstrument (10 ms sampling) "
        "while measured."
    )
    result.charts.append(
        charts.latency_histogram(
            context.image_dir / "end-to-end-latency.png",
            "Command accepted → visible in the read model",
            latencies,
        )
    )
    return result
