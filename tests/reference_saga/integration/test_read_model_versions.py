"""The projections worker process stops when the orders read model's live collection was
built by another version, and says to rebuild. The runtime's side of versions and
aliases (on the kernel's own read model): tests/integration/test_kernel_projection.py."""

import uuid
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kernel.kafka import ensure_topics
from projections.orders import ORDERS
from tests import processes
from tests.support import wait_for


@pytest.fixture
async def database(mongo_url: str, mongo_database: str) -> Any:
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    yield client[mongo_database]
    await client.close()


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
