"""query API: reads/s and latency of a get-by-id and a filtered list, beside raw PyMongo.

The query API process (uvicorn, as deployed) serves orders the real projection wrote.
A closed loop of concurrent HTTP clients reads `GET /orders/{id}` (random ids), then
`GET /orders?customer_id=...&status=APPROVED&limit=20`. The baseline runs the same
queries with the same concurrency straight on the same server with PyMongo's async
client: `find_one` by `_id`, and the list's filter, sort and limit. The API does more
per request by design (one read of the projection's progress for the staleness
headers, validation into response models, JSON over HTTP), and the load generator
shares the 2 cores with it.
"""

import contextlib
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from pymongo import DESCENDING, AsyncMongoClient

from bench import charts, profiling, stack
from bench import http as bench_http
from bench.load import LoadRun, closed_loop
from bench.scenario import BenchContext, Measurement, ScenarioResult
from bench.scenarios.projection import consumed_batches, order_events
from bench.stats import percentiles_ms
from devstack import processes
from devstack.servers import free_port
from kernel.kafka import reliable_producer, stop_producer
from kernel.messaging import DeadLetters
from kernel.projection_runtime import ProjectionRunner
from projections.orders import ORDERS

CLIENTS = 8
CUSTOMERS = 50
Client = AsyncMongoClient[dict[str, Any]]


async def seed(client: Client, database: str, orders: int, bootstrap: str) -> list[str]:
    """Orders written by the real projection (created, then approved); their ids."""
    envelopes = order_events(orders)
    producer = reliable_producer(bootstrap)  # dead letters only; none expected
    await producer.start()
    try:
        runner = ProjectionRunner(ORDERS, client[database], DeadLetters(producer, "bench"))
        await runner.prepare()
        for batch in consumed_batches(envelopes):
            await runner.handle(batch)
    finally:
        await stop_producer(producer)
    return sorted({e.subject for e in envelopes})


def list_filter(i: int) -> dict[str, Any]:
    return {"customer_id": f"customer-{i % CUSTOMERS}", "status": "APPROVED"}


@contextlib.contextmanager
def query_api(context: BenchContext, database: str, profile: Path | None) -> Iterator[str]:
    """The query API process on a free port (under pyinstrument with `profile`); its URL."""
    port = free_port()
    env = {"MONGODB_URL": context.mongo_url, "MONGODB_DATABASE": database}
    with stack.System(env, context.work_dir) as system:
        name = "query-api-profiled" if profile else "query-api"
        factory = "read_side.api:create_app"
        system.start(processes.api(name, factory, port, env, context.work_dir, profile=profile))
        url = f"http://127.0.0.1:{port}"
        system.wait_healthy(url)
        yield url


class Reads:
    """The two reads, over HTTP and straight on MongoDB."""

    def __init__(self, http: aiohttp.ClientSession, orders: Any, ids: list[str]):
        self.http, self.orders, self.ids = http, orders, ids

    async def api_get(self, i: int) -> bool:
        return (
            await bench_http.get_json(self.http, f"/orders/{random.choice(self.ids)}") is not None
        )

    async def raw_get(self, i: int) -> bool:
        return await self.orders.find_one({"_id": random.choice(self.ids)}) is not None

    async def api_list(self, i: int) -> bool:
        listed = await bench_http.get_json(self.http, "/orders", {**list_filter(i), "limit": 20})
        return listed is not None and len(listed["items"]) > 0

    async def raw_list(self, i: int) -> bool:
        query = {**list_filter(i), "created_position": {"$ne": None}}
        cursor = self.orders.find(query).sort("created_position", DESCENDING).limit(21)
        return len(await cursor.to_list()) > 0


async def measure(
    context: BenchContext, database: str, ids: list[str], seconds: float
) -> tuple[dict[str, tuple[LoadRun, LoadRun]], str]:
    """Each read over HTTP then raw; then a shorter run of both under the profiler."""
    client: Client = AsyncMongoClient(context.mongo_url, maxPoolSize=CLIENTS)
    orders = client[database][ORDERS.collection]
    runs: dict[str, tuple[LoadRun, LoadRun]] = {}
    try:
        with query_api(context, database, profile=None) as url:
            async with bench_http.client(url, connections=CLIENTS) as http:
                reads = Reads(http, orders, ids)
                pairs = (
                    ("get-by-id", reads.api_get, reads.raw_get),
                    ("list", reads.api_list, reads.raw_list),
                )
                for name, api, raw in pairs:
                    await closed_loop(CLIENTS, 0.5, api)  # warm-up: connections, caches
                    runs[name] = (
                        await closed_loop(CLIENTS, seconds, api),
                        await closed_loop(CLIENTS, seconds, raw),
                    )
        profile = context.work_dir / "query-api.pyisession"
        with query_api(context, database, profile=profile) as url:
            async with bench_http.client(url, connections=CLIENTS) as http:
                reads = Reads(http, orders, ids)
                await closed_loop(CLIENTS, seconds / 3, reads.api_get)
                await closed_loop(CLIENTS, seconds / 3, reads.api_list)
    finally:
        await client.close()
    return runs, profiling.summary(profiling.load(profile))


async def run(context: BenchContext) -> ScenarioResult:
    orders, seconds = (60, 1.0) if context.quick else (1000, 6.0)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    client: Client = AsyncMongoClient(context.mongo_url)
    try:
        ids = await seed(client, database, orders, context.kafka_bootstrap)
        runs, profile = await measure(context, database, ids, seconds)
    finally:
        await client.drop_database(database)
        await client.close()
    result = ScenarioResult("Query API: reads over HTTP")
    for name, (api, raw) in runs.items():
        what = (
            f"GET /orders/{{id}}, {orders} orders"
            if name == "get-by-id"
            else "GET /orders?customer_id=&status=APPROVED&limit=20"
        )
        result.measurements.append(
            Measurement(
                what=f"{what}, {CLIENTS} clients, {api.errors} errors",
                value=api.rate,
                unit="reads/s",
                baseline_name="raw PyMongo " + ("find_one" if name == "get-by-id" else "find"),
                baseline=raw.rate,
                **percentiles_ms(api.latencies),
            )
        )
        raw_p = percentiles_ms(raw.latencies)
        result.notes.append(
            f"{name}: raw PyMongo p50/p95/p99 {raw_p['p50_ms']:.1f}/{raw_p['p95_ms']:.1f}/"
            f"{raw_p['p99_ms']:.1f} ms."
        )
        result.charts.append(
            charts.latency_histogram(
                context.image_dir / f"query-api-{name}-latency.png",
                f"Query API {name}: HTTP vs raw PyMongo, {CLIENTS} clients",
                {"query API": api.latencies, "raw PyMongo": raw.latencies},
            )
        )
    result.notes.append(f"Profile of the query API process (a separate, shorter run): {profile}")
    return result
