"""Projection versions and aliases on a real MongoDB-wire server: the live worker never
writes into a collection another version built; old deployments keep working."""

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts import orders as contract
from contracts.envelope import Envelope, event_id_for
from devstack.cli import main
from kernel.kafka import ensure_topics
from kernel.messaging import ConsumedMessage
from kernel.projection_catalog import Catalog, LiveTarget, ProjectionVersionMismatch
from kernel.projection_runtime import ProjectionRunner
from projections.orders import ORDERS
from tests import processes
from tests.support import wait_for


@pytest.fixture
async def database(mongo_url: str, mongo_database: str) -> Any:
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    yield client[mongo_database]
    await client.close()


async def test_a_collection_from_before_versions_is_the_live_one_at_version_1(
    database: AsyncDatabase[Any],
):
    await database["orders"].insert_one({"_id": "o-1", "status": "APPROVED"})

    live = await Catalog(database).live(ORDERS)

    assert live == LiveTarget("orders", 1)
    alias = await database["projection_aliases"].find_one({"_id": "orders"})
    assert alias is not None and alias["collection"] == "orders"


async def test_a_new_deployment_starts_on_the_plain_collection_at_the_current_version(
    database: AsyncDatabase[Any],
):
    runner = ProjectionRunner(ORDERS, database, None)
    await runner.prepare()
    assert await runner.target() == "orders"
    assert await Catalog(database).live(ORDERS) == LiveTarget("orders", ORDERS.version)


async def test_the_worker_refuses_a_collection_built_by_another_version(
    database: AsyncDatabase[Any],
):
    await database["orders"].insert_one({"_id": "o-1", "status": "APPROVED"})
    runner = ProjectionRunner(ORDERS, database, None)

    with pytest.raises(ProjectionVersionMismatch, match="Run `cqrs replay orders`"):
        await runner.prepare()
    with pytest.raises(ProjectionVersionMismatch):
        await runner.handle([])
    assert await database["orders"].count_documents({}) == 1


async def test_the_faust_worker_stops_and_says_to_rebuild(
    kafka: str, mongo_url: str, mongo_database: str, database: AsyncDatabase[Any], tmp_path: Path
):
    await database["orders"].insert_one({"_id": "o-1", "status": "APPROVED"})
    await ensure_topics(kafka, {t: 4 for t in ORDERS.topics})
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": mongo_database,
        "PROJECTIONS_GROUP_ID": f"g{uuid.uuid4().hex}",
        "PROJECTIONS_DATA_DIR": str(tmp_path / "faust"),
    }
    worker = processes.projections_worker(env, tmp_path)
    try:
        wait_for(
            lambda: "cqrs replay orders" in worker.log(),
            timeout=60,
            message=f"the worker did not refuse\n{processes.logs(worker)}",
        )
        wait_for(lambda: not worker.alive(), timeout=30, message="the worker kept running")
        assert worker.popen.returncode != 0
    finally:
        worker.stop()


async def test_drop_refuses_the_live_collection_and_drops_a_retired_one(
    database: AsyncDatabase[Any], mongo_url: str, mongo_database: str, monkeypatch: Any, capsys
):
    catalog = Catalog(database)
    live = await catalog.live(ORDERS)
    await catalog.start_build(ORDERS, "orders_v2_new", {"source": "stores"})
    await database["orders_v2_new"].insert_one({"_id": "o-1"})
    await catalog.switch(ORDERS, live, "orders_v2_new")
    monkeypatch.setenv("MONGODB_URL", mongo_url)
    monkeypatch.setenv("MONGODB_DATABASE", mongo_database)

    def cqrs(*argv: str) -> int:  # the CLI runs its own event loop
        return main(list(argv))

    assert await asyncio.to_thread(cqrs, "projections", "drop", "orders_v2_new") == 2
    assert "live collection" in capsys.readouterr().err
    assert await asyncio.to_thread(cqrs, "projections", "drop", "projection_aliases") == 2
    assert await asyncio.to_thread(cqrs, "projections", "drop", "orders") == 0

    assert "orders_v2_new" in await database.list_collection_names()
    assert await catalog.build("orders") is None
    assert await catalog.live(ORDERS) == LiveTarget("orders_v2_new", ORDERS.version)


async def test_a_batch_written_while_the_alias_switches_reaches_the_new_collection(
    database: AsyncDatabase[Any],
):
    """The live worker's fence: it resolved the old collection before the switch, so it
    applies the batch there, then sees the switch and applies it to the new one too."""
    runner = ProjectionRunner(ORDERS, database, None)
    await runner.prepare()
    old = await runner.target()
    catalog = Catalog(database)
    await catalog.start_build(ORDERS, "orders_v2_next", {"source": "kafka"})
    await catalog.switch(ORDERS, await catalog.live(ORDERS), "orders_v2_next")
    order_id = str(uuid.uuid4())

    await runner.handle([created(order_id, offset=7)])  # resolved before the switch

    for collection in (old, "orders_v2_next"):
        document = await database[collection].find_one({"_id": order_id})
        assert document is not None and document["status"] == "APPROVAL_PENDING", collection
    assert await catalog.offsets("orders_v2_next") == {("orders", 0): 7}
    await runner.handle([created(str(uuid.uuid4()), offset=8)])
    assert await database[old].count_documents({}) == 1, "later batches go to the new one only"
    assert await database["orders_v2_next"].count_documents({}) == 2


def created(order_id: str, offset: int) -> ConsumedMessage:
    event = contract.OrderCreated(
        order_id=order_id,
        customer_id="c",
        restaurant_id="r",
        delivery_address=contract.DeliveryAddress(street="1 Main St"),
        line_items=[contract.LineItem(menu_item_id="pizza", quantity=1, unit_price_cents=900)],
        total_cents=900,
    )
    envelope = Envelope(
        id=event_id_for("orders", order_id, 1),
        type=event.type(),
        source="orders",
        subject=order_id,
        time=datetime.now(UTC),
        correlationid="c",
        causationid="c",
        sequence=offset,
        aggregateversion=1,
        data=event.model_dump(mode="json"),
    )
    return ConsumedMessage("orders", 0, offset, order_id.encode(), envelope.to_bytes())
