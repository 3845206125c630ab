"""`cqrs replay` against real servers: a mixed saga workload in four event stores (two on
PostgreSQL, two on SQLite), published by the relays, projected live by the Faust
worker; then rebuilds from the stores and from Kafka, a rebuild killed and resumed,
queries during a rebuild, and writes during a cut-over."""

import asyncio
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.saga_stores import SERVICES, Workload, new_schema, store_env
from devstack.cli import main
from devstack.servers import KafkaBroker
from kernel.kafka import ensure_topics
from kernel.messaging import dead_letter_topic
from kernel.projection import Projection
from kernel.projection_catalog import BuildState, Catalog
from kernel.projections_status import projections_status
from kernel.replay import BOOKKEEPING, Replay, ReplayOptions, ReplaySummary
from operations.replay import store_logs
from projections.orders import ORDERS
from projections.tickets import TICKETS
from read_side.api import create_app
from read_side.settings import QuerySettings
from tests import processes
from tests.stores import POSTGRES_URL
from tests.support import bearer, wait_for_async

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

SAGAS = 80  # ~400 events for the orders read model
Document = dict[str, Any]


@dataclass
class Stack:
    workload: Workload
    env: dict[str, str]
    database: AsyncDatabase[Any]
    bootstrap: str
    mongo_url: str
    worker: processes.Process

    def replay(self, projection: Projection, **options: Any) -> Replay:
        return Replay(
            projection,
            self.database,
            self.bootstrap,
            self.logs,
            ReplayOptions(**{"poll_timeout": 0.2, **options}),
        )

    async def caught_up(self, *names: str) -> bool:
        statuses = {
            s["projection"]: s for s in await projections_status(self.database, self.bootstrap)
        }
        return all(name in statuses and statuses[name]["lag_events"] == 0 for name in names)

    async def wait_caught_up(self, *names: str) -> None:
        try:
            await wait_for_async(lambda: self.caught_up(*names), timeout=90, interval=0.2)
        except TimeoutError:
            statuses = await projections_status(self.database, self.bootstrap)
            pytest.fail(
                f"the live projections did not catch up: {statuses}\n{processes.logs(self.worker)}"
            )


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, mongo_url: str) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("replay")
    broker = KafkaBroker(tmp / "kafka").start()  # its own: the tests read whole topics
    schema = new_schema()
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    database_name = f"test_{uuid.uuid4().hex[:12]}"
    env = {
        **store_env(POSTGRES_URL, schema, tmp),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": database_name,
        "PROJECTIONS_GROUP_ID": f"g{uuid.uuid4().hex}",
        "PROJECTIONS_DATA_DIR": str(tmp / "faust"),
    }
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    workload = Workload(env, broker.bootstrap)
    worker: processes.Process | None = None
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            await ensure_topics(
                broker.bootstrap,
                {**{t: 4 for t in SERVICES}, **{dead_letter_topic(t): 1 for t in SERVICES}},
            )
            await workload.start_relays()
            await workload.write(SAGAS)
            await workload.publish()
            worker = processes.projections_worker(env, tmp)
            stack = Stack(workload, env, client[database_name], broker.bootstrap, mongo_url, worker)
            await stack.wait_caught_up("orders", "tickets")
            with store_logs(set(SERVICES)) as logs:
                stack.logs = logs  # type: ignore[attr-defined]
                yield stack
    finally:
        if worker is not None:
            worker.stop()
        await workload.stop_relays()
        workload.close()
        await client.drop_database(database_name)
        await client.close()
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
        broker.stop()


async def documents(database: AsyncDatabase[Any], collection: str) -> dict[str, Document]:
    """The collection's documents by id, without ``_rev`` (a count of writes: it depends
    on how the events were batched, not on what the document holds)."""
    return {
        d["_id"]: {k: v for k, v in d.items() if k not in BOOKKEEPING}
        async for d in database[collection].find({})
    }


async def live_documents(stack: Stack, projection: Projection) -> dict[str, Document]:
    live = await Catalog(stack.database).live(projection)
    return await documents(stack.database, live.collection)


async def test_rebuilds_from_the_stores_and_from_kafka_equal_the_live_read_model(stack: Stack):
    for projection in (ORDERS, TICKETS):
        live = await live_documents(stack, projection)
        assert len(live) >= SAGAS * 3 // 4, "the workload's documents are there"
        built = {}
        for source in ("stores", "kafka"):
            summary = await stack.replay(projection, source=source, switch=False).run()
            assert summary.events > 0 and not summary.switched
            built[source] = await documents(stack.database, summary.collection)
            build = await Catalog(stack.database).build(summary.collection)
            assert build is not None and build["state"] == BuildState.BUILT
        assert built["stores"] == built["kafka"] == live, projection.name


async def test_a_rebuild_from_a_position_applies_only_the_events_after_it(stack: Stack):
    after = 100
    expected = {
        event_id for ids in expected_timelines(stack, after=after).values() for event_id in ids
    }
    built = {}
    for source in ("stores", "kafka"):
        summary = await stack.replay(ORDERS, source=source, switch=False, from_position=after).run()
        built[source] = await documents(stack.database, summary.collection)
    applied = {e["event_id"] for d in built["stores"].values() for e in d["timeline"]}
    assert applied == expected and len(expected) > 0
    assert built["stores"] == built["kafka"]


async def test_a_rebuild_killed_mid_way_resumes_to_the_same_result(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    argv = [sys.executable, "-m", "devstack", "replay", "orders", "--no-switch"]
    rebuild = processes.Process("replay", [*argv, "--batch-size", "5"], stack.env, tmp_path)
    builds = stack.database["projection_builds"]
    try:
        started = await wait_for_async(
            lambda: builds.find_one(
                {"projection": "orders", "state": "building", "events": {"$gte": 40}}
            ),
            timeout=60,
            interval=0.01,
        )
    except TimeoutError:
        pytest.fail(f"the rebuild made no progress\n{processes.logs(rebuild)}")
    finally:
        rebuild.kill()
    killed = await builds.find_one({"_id": started["_id"]})
    assert killed is not None and killed["state"] == "building", "killed before it finished"
    assert killed["events"] < 300, "killed mid-way"
    assert await asyncio.to_thread(main, ["projections", "status", "--json"]) == 0
    status = {s["projection"]: s for s in json.loads(capsys.readouterr().out)}
    assert [b["collection"] for b in status["orders"]["rebuilds"]] == [started["_id"]]
    assert status["orders"]["lag_events"] == 0

    summary = await stack.replay(ORDERS, resume=True, switch=False).run()

    assert summary.collection == started["_id"], "the killed rebuild was continued"
    assert await documents(stack.database, summary.collection) == await live_documents(
        stack, ORDERS
    )


async def test_queries_during_a_rebuild_and_its_cut_over_see_only_whole_read_models(
    stack: Stack,
):
    settings = QuerySettings(
        mongodb_url=stack.mongo_url,
        mongodb_database=stack.env["MONGODB_DATABASE"],
        kafka_bootstrap_servers=stack.bootstrap,
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://q", headers=bearer()
        ) as api,
    ):
        before = (await api.get("/orders", params={"limit": 100})).json()
        assert len(before["items"]) == SAGAS
        rebuild = asyncio.create_task(stack.replay(ORDERS, batch_size=5).run())
        answers, saw_rebuild = 0, False
        while not rebuild.done():
            page = (await api.get("/orders", params={"limit": 100})).json()
            assert page == before, "a query saw a read model other than the whole one"
            answers += 1
            status = (await api.get("/projections")).json()
            orders = next(s for s in status if s["projection"] == "orders")
            saw_rebuild = saw_rebuild or bool(orders["rebuilds"])
        summary: ReplaySummary = rebuild.result()
        assert summary.switched, summary.shadow
        assert answers >= 3 and saw_rebuild

        async def serving_the_new_collection() -> bool:
            status = (await api.get("/projections")).json()
            return any(s["collection"] == summary.collection for s in status)

        await wait_for_async(serving_the_new_collection, timeout=10)
        assert (await api.get("/orders", params={"limit": 100})).json() == before


async def test_writes_during_the_cut_over_are_neither_lost_nor_applied_twice(stack: Stack):
    previous = await Catalog(stack.database).live(ORDERS)
    stop = asyncio.Event()

    async def write_and_publish() -> None:
        while not stop.is_set():
            await stack.workload.write(1)
            await stack.workload.publish()

    replay = stack.replay(ORDERS, batch_size=50)
    switch = replay.catalog.switch

    async def switch_after_more_writes(*args: Any) -> None:
        # The worst moment: the rebuild has caught up and checked, then the live worker
        # applies more events to the old collection, then the alias switches.
        await stack.workload.write(3)
        await stack.workload.publish()
        await stack.wait_caught_up("orders")
        await switch(*args)

    replay.catalog.switch = switch_after_more_writes  # type: ignore[method-assign]
    writer = asyncio.create_task(write_and_publish())
    try:
        summary = await replay.run()
        await stack.workload.write(4)  # and after the switch
    finally:
        stop.set()
        await writer
    await stack.workload.publish()
    assert summary.switched and summary.previous == previous.collection, summary.shadow
    await stack.wait_caught_up("orders")

    live = await live_documents(stack, ORDERS)
    expected = expected_timelines(stack)
    assert len(expected) == stack.workload.written > SAGAS
    applied = {
        order_id: Counter(e["event_id"] for e in d["timeline"]) for order_id, d in live.items()
    }
    assert applied == {order_id: Counter(ids) for order_id, ids in expected.items()}
    fresh = await stack.replay(ORDERS, source="kafka", switch=False).run()
    assert await documents(stack.database, fresh.collection) == live


def expected_timelines(stack: Stack, after: int = 0) -> dict[str, list[str]]:
    """Every event of every order in the four stores (after position ``after`` of its
    own log), by order."""
    types = {model.type() for model in ORDERS.accepts}
    timelines: dict[str, list[str]] = {}
    for log in stack.logs:  # type: ignore[attr-defined]
        for notification in log.read(after + 1, 10**6, log.last_position()):
            envelope = log.envelope(notification)
            if envelope is not None and envelope.type in types:
                timelines.setdefault(envelope.data["order_id"], []).append(envelope.id)
    return timelines
