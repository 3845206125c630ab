"""Degraded, not broken (issue 17, item 3), on the read side: while MongoDB is away
(SecantusDB of the test's own, stopped and started by PID) the query API answers 503 with
Retry-After and a problem body within its timeout and recovers by itself; the projections
worker waits and then handles every message once.
"""

import asyncio
import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from contracts import orders as contract
from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from devstack.servers import MongoServer, ensure_secantus_venv, free_port
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from tests import processes
from tests.support import assert_unavailable, bearer, wait_for, wait_for_async

PROJECT = Path(__file__).resolve().parents[3]

MONGODB_TIMEOUT = 1.0
EVENT_STORE_TIMEOUT = 1.0
MARGIN = 1.5
"""Seconds an answer may take beyond the timeout that bounds it (a loaded machine)."""


# ------------------------------------------------------------ the query API and MongoDB

ORDER_ID = str(uuid.uuid4())
QUERIES = [
    "/orders",
    f"/orders/{ORDER_ID}",
    f"/orders/{ORDER_ID}/timeline",
    f"/orders/{ORDER_ID}?consistency_token=orders:1:{ORDER_ID}:1",  # waits for the token
    "/consumers/customer-1/orders",
    "/tickets",
    f"/tickets/{ORDER_ID}",
    "/sagas/stuck?older_than=1",
    "/projections",
]


def test_the_query_api_answers_503_while_mongodb_is_away_and_recovers_by_itself(
    tmp_path: Path,
) -> None:
    ensure_secantus_venv()
    mongo = MongoServer(tmp_path / "mongo")  # not started yet: away when the API starts
    env = {
        "MONGODB_URL": mongo.url,
        "MONGODB_DATABASE": "read_models",
        "MONGODB_TIMEOUT": str(MONGODB_TIMEOUT),
        "READ_YOUR_WRITES_TIMEOUT": "1",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # no broker: lags are null
    }
    url, api = processes.started_api("query-api", "read_side.api:create_app", env, tmp_path)
    bound = MONGODB_TIMEOUT + MARGIN
    try:
        with httpx.Client(base_url=url, headers=bearer(), timeout=30) as client:

            def answers_while_away() -> None:
                with ThreadPoolExecutor(len(QUERIES) + 1) as pool:  # at once: seconds each
                    answers = list(pool.map(client.get, ["/health", *QUERIES]))
                for response in answers:
                    assert_unavailable(response, bound)

            def answers_while_there() -> None:
                assert client.get("/health").status_code == 200
                assert client.get("/orders").status_code == 200
                assert client.get(f"/orders/{ORDER_ID}").status_code == 404
                assert client.get("/tickets").status_code == 200

            answers_while_away()  # never reached since the API started
            mongo.start()
            wait_for(lambda: client.get("/health").status_code == 200, timeout=10)
            answers_while_there()

            os.killpg(mongo.pid, signal.SIGKILL)  # by its PID, while the API runs: a crash
            mongo.stop()  # reaps it
            answers_while_away()

            mongo = MongoServer(tmp_path / "mongo", port=mongo.port).start()  # same data
            wait_for(lambda: client.get("/health").status_code == 200, timeout=10)
            answers_while_there()
        assert api.alive(), api.log()
    finally:
        api.stop()
        mongo.stop()


# ------------------------------------------------------ a command API and its event store


def orders_event(event: ContractEvent, order_id: str, version: int, sequence: int) -> bytes:
    return Envelope(
        id=event_id_for("orders", order_id, version),
        type=event.type(),
        source="orders",
        subject=order_id,
        time=datetime.now(UTC),
        correlationid=order_id,
        causationid=order_id,
        sequence=sequence,
        aggregateversion=version,
        data=event.model_dump(mode="json"),
    ).to_bytes()


def created(order_id: str, sequence: int) -> bytes:
    event = contract.OrderCreated(
        order_id=order_id,
        customer_id="customer-1",
        restaurant_id="restaurant-1",
        delivery_address=contract.DeliveryAddress(street="1 Main St", city="Springfield"),
        line_items=[contract.LineItem(menu_item_id="pizza", quantity=1, unit_price_cents=900)],
        total_cents=900,
    )
    return orders_event(event, order_id, 1, sequence)


def approved(order_id: str, sequence: int) -> bytes:
    return orders_event(contract.OrderApproved(order_id=order_id), order_id, 2, sequence)


async def test_the_projections_worker_waits_for_mongodb_and_applies_every_message_once(
    kafka: str, tmp_path: Path
) -> None:
    ensure_secantus_venv()
    mongo = MongoServer(tmp_path / "mongo").start()
    await ensure_topics(kafka, {"orders": 4, "orders.dead-letters": 1})
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        # A batch's attempt fails within a second while MongoDB is away (then it is retried).
        "MONGODB_URL": f"{mongo.url}&serverSelectionTimeoutMS=1000",
        "MONGODB_DATABASE": "read_models",
        "PROJECTIONS_GROUP_ID": f"g{uuid.uuid4().hex}",
        "PROJECTIONS_DATA_DIR": str(tmp_path / "faust"),
    }
    worker = processes.projections_worker(env, tmp_path)
    producer = reliable_producer(kafka)
    await producer.start()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo.url, serverSelectionTimeoutMS=2000)
    orders = client["read_models"]["orders"]
    sequence = 0

    async def send(order_id: str, message: bytes) -> None:
        await producer.send_and_wait("orders", message, key=order_id.encode())

    try:
        first = str(uuid.uuid4())
        sequence += 1
        await send(first, created(first, sequence))
        await wait_for_async(
            lambda: orders.find_one({"_id": first}),
            timeout=60,
            ignore=(Exception,),
            message=f"the worker projecting\n{processes.logs(worker)}",
        )

        mongo.stop()  # by its PID
        meanwhile = [str(uuid.uuid4()) for _ in range(6)]
        for order_id in meanwhile:
            sequence += 1
            await send(order_id, created(order_id, sequence))
        for order_id in [first, *meanwhile[:3]]:
            sequence += 1
            await send(order_id, approved(order_id, sequence))
        # Until a batch has met the outage (retry_until_done logs each retry; a worker
        # that does not retry fails there).
        await asyncio.to_thread(
            wait_for,
            lambda: any(word in worker.log_path.read_text() for word in ("retrying", "Traceback")),
            timeout=30,
            message=f"the worker meeting MongoDB away\n{processes.logs(worker)}",
        )

        mongo = MongoServer(tmp_path / "mongo", port=mongo.port).start()

        async def all_applied() -> bool:
            approved_count = await orders.count_documents({"status": "APPROVED"})
            return approved_count == 4 and await orders.count_documents({}) == 7

        await wait_for_async(
            all_applied,
            timeout=60,
            ignore=(Exception,),
            message=f"every message applied\n{processes.logs(worker)}",
        )
        async for document in orders.find({}):
            events = [entry["event"] for entry in document["timeline"]]
            assert len(events) == len(set(events)), document  # each event applied once
            assert document["version"] == (2 if document["status"] == "APPROVED" else 1)
        assert worker.alive(), worker.log()
    finally:
        await stop_producer(producer)
        await client.close()
        worker.stop()
        mongo.stop()
