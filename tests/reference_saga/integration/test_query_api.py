"""The query API against a real MongoDB-wire server.

Read-model documents are seeded directly in the shapes the orders projection writes;
each test has a database of its own (``mongo_database``) and its own app, driven in
process through its lifespan.
"""

import asyncio
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from read_side.api import create_app
from read_side.orders import OrdersReadModel
from read_side.settings import QuerySettings
from tests.mongo_commands import CommandCounter
from tests.support import bearer

Document = dict[str, Any]
# Fixed, not uuid4(): every pytest-xdist worker must collect the same test ids.
AN_ORDER = "0b6c5f0e-6a8f-4b5e-9a53-2d1c3f9e8a71"
STALENESS_HEADERS = ("x-read-model-position", "x-read-model-event-time", "x-read-model-age")


def now_ms() -> datetime:
    """Now, to the millisecond (what a BSON date keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


SAGA_STATE = {
    "APPROVAL_PENDING": "PENDING",
    "APPROVED": "APPROVED",
    "REJECTED": "REJECTED",
    "CANCELLED": "APPROVED",
}


def order_doc(
    created_position: int,
    *,
    customer_id: str = "customer-a",
    status: str = "APPROVAL_PENDING",
    version: int = 1,
    order_id: str | None = None,
    created_at: datetime | None = None,
) -> Document:
    """An order document as docs/read-models.md describes it (bookkeeping included)."""
    order_id = order_id or str(uuid.uuid4())
    created_at = created_at or now_ms() - timedelta(minutes=5)
    return {
        "_id": order_id,
        "order_id": order_id,
        "customer_id": customer_id,
        "restaurant_id": "restaurant-1",
        "delivery_address": {
            "street": "1 Main Street",
            "city": "Springfield",
            "postal_code": "12345",
            "country": "US",
        },
        "line_items": [
            {"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250},
            {"menu_item_id": "soda", "quantity": 1, "unit_price_cents": 300},
        ],
        "total_cents": 2800,
        "status": status,
        "rejection_reason": None,
        "failed_step": None,
        "cancellation_reason": None,
        "created_position": created_position,
        "created_at": created_at,
        "version": version,
        "position": created_position + version - 1,
        "updated_at": created_at + timedelta(seconds=version),
        "saga": {
            "state": SAGA_STATE[status],
            "consumer_verification": None,
            "ticket": None,
            "card_authorization": None,
            "failed_step": None,
            "reason": None,
        },
        "timeline": [
            {
                "service": "orders",
                "event": "orders.OrderCreated.v1",
                "time": created_at,
                "event_id": str(uuid.uuid4()),
                "detail": None,
            }
        ],
        "_applied": {f"orders:{order_id}": version},
        "_rev": version,
    }


def progress_doc(
    partition: int,
    position: int,
    event_time: datetime,
    projection: str = "orders",
    topic: str | None = None,
) -> Document:
    topic = topic or projection
    return {
        "_id": f"{projection}:{topic}:{partition}",
        "projection": projection,
        "topic": topic,
        "partition": partition,
        "offset": position,
        "position": position,
        "event_time": event_time,
        "updated_at": now_ms(),
    }


def token(order_id: str, version: int, service: str = "orders", position: int = 7) -> str:
    return f"{service}:{position}:{order_id}:{version}"


@asynccontextmanager
async def query_api(
    mongo_url: str, database: str, *, timeout: float = 2.0, mongodb_timeout: float = 5.0
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        QuerySettings(
            mongodb_url=mongo_url,
            mongodb_database=database,
            read_your_writes_timeout=timeout,
            mongodb_timeout=mongodb_timeout,
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://query-api", headers=bearer()
        ) as client,
    ):
        yield client


@pytest.fixture
async def db(mongo_url: str, mongo_database: str) -> AsyncIterator[AsyncDatabase[Document]]:
    """The test's database, for seeding and changing the read model directly."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        yield client[mongo_database]
    finally:
        await client.close()


@pytest.fixture
async def api(mongo_url: str, mongo_database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with query_api(mongo_url, mongo_database) as client:
        yield client


def positions(page: Document) -> list[int]:
    return [item["created_position"] for item in page["items"]]


# --- health and startup -------------------------------------------------------------


async def test_health_is_ok_when_mongo_answers(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_unreachable_mongo_gives_503_on_health_and_orders() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    async with query_api(url, "unreachable", mongodb_timeout=0.3) as client:
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] != "ok"
        listing = await client.get("/orders")
        assert listing.status_code == 503
        assert listing.headers["retry-after"] == "1"


async def test_startup_creates_the_list_indexes(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    keys = [info["key"] for info in (await db["orders"].index_information()).values()]
    assert [("customer_id", 1), ("created_position", -1)] in keys
    assert [("status", 1), ("created_position", -1)] in keys
    assert [("created_position", -1)] in keys
    assert [("status", 1), ("created_at", 1)] in keys  # stuck sagas
    keys = [info["key"] for info in (await db["tickets"].index_information()).values()]
    assert [("restaurant_id", 1), ("updated_at", -1), ("_id", -1)] in keys
    assert [("status", 1), ("updated_at", -1), ("_id", -1)] in keys
    assert [("updated_at", -1), ("_id", -1)] in keys


async def test_startup_indexes_are_idempotent(
    mongo_url: str, mongo_database: str, db: AsyncDatabase[Document]
) -> None:
    async with query_api(mongo_url, mongo_database):
        pass
    first = await db["tickets"].index_information()
    async with query_api(mongo_url, mongo_database) as api:
        assert (await api.get("/tickets")).status_code == 200
    assert await db["tickets"].index_information() == first


# --- one order ----------------------------------------------------------------------


async def test_get_order_by_id(api: httpx.AsyncClient, db: AsyncDatabase[Document]) -> None:
    document = order_doc(3, status="REJECTED", version=2)
    document["rejection_reason"] = "restaurant closed"
    document["failed_step"] = "kitchen"
    document["saga"].update(
        consumer_verification="VERIFIED",
        ticket="REJECTED",
        failed_step="kitchen",
        reason="restaurant closed",
    )
    await db["orders"].insert_many([document, order_doc(4)])

    response = await api.get(f"/orders/{document['_id']}")

    assert response.status_code == 200
    body = response.json()
    assert not [key for key in body if key.startswith("_")]
    assert datetime.fromisoformat(body.pop("created_at")) == document["created_at"]
    assert datetime.fromisoformat(body.pop("updated_at")) == document["updated_at"]
    [entry] = body.pop("timeline")
    assert datetime.fromisoformat(entry.pop("time")) == document["timeline"][0]["time"]
    assert entry == {k: v for k, v in document["timeline"][0].items() if k != "time"}
    expected = {
        key: value
        for key, value in document.items()
        if not key.startswith("_") and key not in ("created_at", "updated_at", "timeline")
    }
    assert body == expected


async def test_an_order_written_before_addresses_were_structured_shows_it_as_the_street(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(5)
    document["delivery_address"] = "1 Main Street, Springfield"  # an OrderCreated v1 document
    await db["orders"].insert_one(document)

    response = await api.get(f"/orders/{document['_id']}")

    assert response.status_code == 200
    assert response.json()["delivery_address"] == {
        "street": "1 Main Street, Springfield",
        "city": None,
        "postal_code": None,
        "country": None,
    }


async def test_unknown_order_is_404(api: httpx.AsyncClient, db: AsyncDatabase[Document]) -> None:
    await db["orders"].insert_one(order_doc(1))
    missing = uuid.uuid4()

    response = await api.get(f"/orders/{missing}")

    assert response.status_code == 404
    assert response.json()["detail"] == f"order {missing} not found"
    assert (await api.get("/orders/not-a-uuid")).status_code == 422


# --- lists and pages ----------------------------------------------------------------


@pytest.fixture
async def mixed_orders(db: AsyncDatabase[Document]) -> list[Document]:
    documents = [
        order_doc(10, customer_id="customer-a", status="APPROVED"),
        order_doc(11, customer_id="customer-b", status="APPROVED"),
        order_doc(12, customer_id="customer-a", status="REJECTED"),
        order_doc(15, customer_id="customer-a", status="APPROVED"),
        order_doc(17, customer_id="customer-b", status="CANCELLED"),
        order_doc(20, customer_id="customer-c", status="APPROVAL_PENDING"),
    ]
    await db["orders"].insert_many(random.sample(documents, len(documents)))
    return documents


async def test_list_is_newest_first(api: httpx.AsyncClient, mixed_orders: list[Document]) -> None:
    page = (await api.get("/orders")).json()
    assert positions(page) == [20, 17, 15, 12, 11, 10]
    assert page["next_cursor"] is None
    assert {item["order_id"] for item in page["items"]} == {doc["_id"] for doc in mixed_orders}


async def test_list_filters_by_customer(
    api: httpx.AsyncClient, mixed_orders: list[Document]
) -> None:
    response = await api.get("/orders", params={"customer_id": "customer-a"})
    assert response.status_code == 200
    page = response.json()
    assert positions(page) == [15, 12, 10]
    assert {item["customer_id"] for item in page["items"]} == {"customer-a"}
    assert page["next_cursor"] is None
    nobody = await api.get("/orders", params={"customer_id": "customer-z"})
    assert nobody.json() == {"items": [], "next_cursor": None}


async def test_list_filters_by_status(api: httpx.AsyncClient, mixed_orders: list[Document]) -> None:
    approved = (await api.get("/orders", params={"status": "APPROVED"})).json()
    assert positions(approved) == [15, 11, 10]
    assert {item["status"] for item in approved["items"]} == {"APPROVED"}

    both = await api.get("/orders", params={"status": "APPROVED", "customer_id": "customer-b"})
    assert positions(both.json()) == [11]


async def walk(api: httpx.AsyncClient, path: str = "/orders", **params: Any) -> list[list[int]]:
    """Every page of a listing, following next_cursor; the created_positions per page."""
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor is not None else {})}
        response = await api.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(positions(page))
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "next_cursor never became null"


async def test_pagination_walks_every_order_once(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    # 25 orders with gaps between their positions, stored in no particular order;
    # 20 of them are customer-a's (an exact multiple of the page size).
    created = sorted(random.sample(range(1, 1000), 25), reverse=True)
    documents = [
        order_doc(position, customer_id="customer-b" if i % 5 == 0 else "customer-a")
        for i, position in enumerate(created)
    ]
    await db["orders"].insert_many(random.sample(documents, len(documents)))

    pages = await walk(api, limit=10)
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [position for page in pages for position in page] == created

    customer_a = [
        doc["created_position"] for doc in documents if doc["customer_id"] == "customer-a"
    ]
    pages = await walk(api, limit=10, customer_id="customer-a")
    assert [len(page) for page in pages] == [10, 10]
    assert [position for page in pages for position in page] == customer_a

    assert len((await api.get("/orders")).json()["items"]) == 20  # the default limit


async def test_pages_are_ranges_not_offsets(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    """A newer order arriving between two pages shifts nothing on the next page."""
    await db["orders"].insert_many([order_doc(position) for position in range(1, 7)])
    first = (await api.get("/orders", params={"limit": 3})).json()
    assert positions(first) == [6, 5, 4]

    await db["orders"].insert_one(order_doc(7))
    second = await api.get("/orders", params={"limit": 3, "cursor": first["next_cursor"]})

    assert positions(second.json()) == [3, 2, 1]
    assert second.json()["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"status": "SHIPPED"},
        {"status": "approved"},
    ],
)
async def test_bad_limit_or_status_is_422(api: httpx.AsyncClient, params: Document) -> None:
    response = await api.get("/orders", params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", next(iter(params))]


async def test_limit_bounds_are_accepted(api: httpx.AsyncClient) -> None:
    for limit in (1, 100):
        assert (await api.get("/orders", params={"limit": limit})).status_code == 200


@pytest.mark.parametrize("cursor", ["abc", "-5", "0", "1.5", "0x10", " 7", "9" * 30])
async def test_bad_cursor_is_400(api: httpx.AsyncClient, cursor: str) -> None:
    response = await api.get("/orders", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["detail"] == "invalid cursor"


# --- read-your-writes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["garbage", "orders:7:not-a-uuid:1", f"orders:0:{AN_ORDER}:1", f"orders:7:{AN_ORDER}"],
)
async def test_malformed_token_is_400(api: httpx.AsyncClient, text: str) -> None:
    for path in (f"/orders/{uuid.uuid4()}", "/orders"):
        by_header = await api.get(path, headers={"X-Consistency-Token": text})
        assert by_header.status_code == 400
        assert "malformed consistency token" in by_header.json()["detail"]
        by_query = await api.get(path, params={"consistency_token": text})
        assert by_query.status_code == 400
        assert "malformed consistency token" in by_query.json()["detail"]


async def test_disagreeing_header_and_query_tokens_are_400(api: httpx.AsyncClient) -> None:
    order_id = str(uuid.uuid4())
    response = await api.get(
        f"/orders/{order_id}",
        headers={"X-Consistency-Token": token(order_id, 1)},
        params={"consistency_token": token(order_id, 2)},
    )
    assert response.status_code == 400
    assert "disagree" in response.json()["detail"]


async def test_token_of_another_service_is_400(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(1)
    await db["orders"].insert_one(document)
    response = await api.get(
        f"/orders/{document['_id']}",
        headers={"X-Consistency-Token": token(document["_id"], 1, service="kitchen")},
    )
    assert response.status_code == 400
    assert "kitchen" in response.json()["detail"]


async def test_token_already_reached_answers_at_once(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(1, version=3)
    await db["orders"].insert_one(document)
    started = time.monotonic()
    for reached in (token(document["_id"], 2), token(document["_id"], 3)):
        response = await api.get(
            f"/orders/{document['_id']}", headers={"X-Consistency-Token": reached}
        )
        assert response.status_code == 200
        assert response.json()["version"] == 3
    assert time.monotonic() - started < 1.5  # the read-your-writes timeout is 2 s


@pytest.mark.parametrize("route", ["one", "list"])
async def test_token_ahead_of_the_read_model_is_503_after_the_timeout(
    mongo_url: str, mongo_database: str, db: AsyncDatabase[Document], route: str
) -> None:
    document = order_doc(1, version=1)
    await db["orders"].insert_one(document)
    await db["projection_progress"].insert_one(progress_doc(0, 1, now_ms()))
    path = f"/orders/{document['_id']}" if route == "one" else "/orders"
    timeout = 0.5
    async with query_api(mongo_url, mongo_database, timeout=timeout) as api:
        for ahead in (token(document["_id"], 2), token(str(uuid.uuid4()), 1)):
            started = time.monotonic()
            response = await api.get(path, headers={"X-Consistency-Token": ahead})
            elapsed = time.monotonic() - started

            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert "not caught up" in response.json()["detail"]
            assert ahead in response.json()["detail"]
            assert timeout <= elapsed < timeout + 2.0
            assert response.headers["x-read-model-position"] == "1"


@pytest.mark.parametrize("passed_as", ["header", "query", "list"])
async def test_token_reached_while_waiting_answers_the_new_version(
    mongo_url: str, mongo_database: str, db: AsyncDatabase[Document], passed_as: str
) -> None:
    document = order_doc(1, version=1)
    await db["orders"].insert_one(document)
    ahead = token(document["_id"], 2)
    async with query_api(mongo_url, mongo_database, timeout=5.0) as api:
        if passed_as == "header":
            request = api.get(f"/orders/{document['_id']}", headers={"X-Consistency-Token": ahead})
        elif passed_as == "query":
            request = api.get(f"/orders/{document['_id']}", params={"consistency_token": ahead})
        else:
            request = api.get("/orders", params={"consistency_token": ahead})
        query = asyncio.create_task(request)

        # The scenario, not a synchronisation: the projection applies version 2 about
        # 200 ms after the query started; the query must still be waiting then.
        await asyncio.sleep(0.2)
        assert not query.done(), "the query answered before the read model reached the token"
        await db["orders"].update_one(
            {"_id": document["_id"]},
            {"$set": {"version": 2, "status": "APPROVED", "position": 2}},
        )
        response = await asyncio.wait_for(query, timeout=5.0)

    assert response.status_code == 200
    body = response.json()
    order = body if passed_as != "list" else body["items"][0]
    assert (order["version"], order["status"]) == (2, "APPROVED")


# --- staleness headers --------------------------------------------------------------


async def test_staleness_headers_report_the_projection_progress(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(1)
    await db["orders"].insert_one(document)
    newest = now_ms() - timedelta(seconds=30)
    await db["projection_progress"].insert_many(
        [
            progress_doc(0, 41, newest - timedelta(seconds=20)),
            progress_doc(1, 57, newest - timedelta(seconds=5)),
            progress_doc(2, 44, newest),
            # Another projection's progress is not the orders read model's.
            progress_doc(0, 999, now_ms(), projection="kitchen"),
        ]
    )

    answers = [
        await api.get(f"/orders/{document['_id']}"),
        await api.get(f"/orders/{uuid.uuid4()}"),
        await api.get("/orders"),
    ]

    assert [answer.status_code for answer in answers] == [200, 404, 200]
    for answer in answers:
        assert answer.headers["x-read-model-position"] == "57"
        assert datetime.fromisoformat(answer.headers["x-read-model-event-time"]) == newest
        age = answer.headers["x-read-model-age"]
        assert len(age.split(".")[1]) == 3
        assert 30.0 <= float(age) < 40.0


async def test_reads_of_the_progress_in_flight_are_shared_and_later_ones_read_it_again(
    mongo_url: str, db: AsyncDatabase[Document]
) -> None:
    await db["projection_progress"].insert_one(progress_doc(0, 5, now_ms()))
    counter = CommandCounter()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongo_url, event_listeners=[counter])
    read_model = OrdersReadModel(client[db.name])
    try:
        together = await asyncio.gather(*(read_model.staleness() for _ in range(20)))
        progress_reads = counter.commands.count(("find", "projection_progress"))
        await db["projection_progress"].insert_one(progress_doc(1, 9, now_ms()))
        after = await read_model.staleness()
    finally:
        await client.close()

    assert {staleness.position for staleness in together} == {5}
    assert progress_reads == 1  # twenty requests at once, one query
    assert after.position == 9  # nothing kept beyond the read in flight


async def test_staleness_headers_before_any_progress(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    for path in (f"/orders/{uuid.uuid4()}", "/orders"):
        response = await api.get(path)
        assert response.headers["x-read-model-position"] == "0"
        assert "x-read-model-event-time" not in response.headers
        assert "x-read-model-age" not in response.headers

    await db["projection_progress"].insert_one(progress_doc(0, 3, now_ms()))
    response = await api.get("/orders")
    assert response.headers["x-read-model-position"] == "3"
    assert all(header in response.headers for header in STALENESS_HEADERS)


async def test_openapi_documents_the_staleness_and_consistency_headers(
    api: httpx.AsyncClient,
) -> None:
    schema = (await api.get("/openapi.json")).json()
    for path in ("/orders", "/orders/{order_id}"):
        operation = schema["paths"][path]["get"]
        parameters = {parameter["name"] for parameter in operation["parameters"]}
        assert {"X-Consistency-Token", "consistency_token"} <= parameters
        for status in ("200", "503"):
            headers = operation["responses"][status]["headers"]
            assert {"X-Read-Model-Position", "X-Read-Model-Event-Time", "X-Read-Model-Age"} <= set(
                headers
            )
