"""The query API's saga-era read models against a real MongoDB-wire server.

Orders with their saga and timeline, documents not visible yet, staleness per topic,
a consumer's orders, kitchen tickets and stuck sagas. Documents are seeded directly in
the shapes of docs/read-models.md; helpers and fixtures come from test_query_api.
"""

import base64
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from tests.reference_saga.integration.test_query_api import (
    Document,
    api,
    db,
    now_ms,
    order_doc,
    positions,
    progress_doc,
    query_api,
    token,
    walk,
)

__all__ = ["api", "db"]  # fixtures


def entry(service: str, event: str, time: datetime, detail: str | None = None) -> Document:
    return {
        "service": service,
        "event": event,
        "time": time,
        "event_id": str(uuid.uuid4()),
        "detail": detail,
    }


def underscore_keys(value: Any) -> list[str]:
    """Every key starting with `_` anywhere in a JSON answer."""
    if isinstance(value, dict):
        return [key for key in value if key.startswith("_")] + [
            key for item in value.values() for key in underscore_keys(item)
        ]
    if isinstance(value, list):
        return [key for item in value for key in underscore_keys(item)]
    return []


# --- saga and timeline ---------------------------------------------------------------


@pytest.fixture
async def rejected_order(db: AsyncDatabase[Document]) -> Document:
    """A saga the card refused; its events were applied out of time order."""
    document = order_doc(5, status="REJECTED", version=2)
    start = document["created_at"]
    document["rejection_reason"] = "card declined"
    document["failed_step"] = "accounting"
    document["saga"] = {
        "state": "REJECTED",
        "consumer_verification": "VERIFIED",
        "ticket": "CANCELLED",
        "card_authorization": "FAILED",
        "failed_step": "accounting",
        "reason": "card declined",
    }
    verified = entry("consumers", "consumers.ConsumerVerified.v1", start + timedelta(seconds=1))
    ticket = entry("kitchen", "kitchen.TicketCreated.v1", start + timedelta(seconds=2))
    # Two events at the same millisecond: they keep their arrival order, whatever
    # their ids.
    failed = entry(
        "accounting",
        "accounting.CardAuthorizationFailed.v1",
        start + timedelta(seconds=3),
        "card declined",
    )
    failed["event_id"] = "ffffffff-0000-4000-8000-000000000000"
    rejected = entry(
        "orders", "orders.OrderRejected.v1", start + timedelta(seconds=3), "accounting: card"
    )
    rejected["event_id"] = "00000000-0000-4000-8000-000000000000"
    cancelled = entry(
        "kitchen", "kitchen.TicketCancelled.v1", start + timedelta(seconds=4), "card declined"
    )
    created = document["timeline"][0]
    # Arrival order: kitchen's topic was read first, then accounting, orders, consumers.
    document["timeline"] = [ticket, cancelled, failed, created, rejected, verified]
    document["_applied"] = {"orders": 2, "kitchen": 2, "accounting": 1, "consumers": 1}
    await db["orders"].insert_many([document, order_doc(6)])
    document["by_time"] = [created, verified, ticket, failed, rejected, cancelled]
    return document


def timeline_events(timeline: list[Document]) -> list[tuple[str, str, str | None]]:
    return [(item["event"], item["event_id"], item["detail"]) for item in timeline]


async def test_order_has_its_saga_and_its_timeline_sorted_by_time(
    api: httpx.AsyncClient, rejected_order: Document
) -> None:
    order_id = rejected_order["_id"]
    one = await api.get(f"/orders/{order_id}")
    listed = await api.get("/orders", params={"status": "REJECTED"})
    assert one.status_code == listed.status_code == 200
    [item] = listed.json()["items"]

    expected = timeline_events(rejected_order["by_time"])
    for body in (one.json(), item):
        assert underscore_keys(body) == []
        assert body["saga"] == rejected_order["saga"]
        assert body["failed_step"] == "accounting"
        assert timeline_events(body["timeline"]) == expected
        assert [datetime.fromisoformat(e["time"]) for e in body["timeline"]] == [
            e["time"] for e in rejected_order["by_time"]
        ]
        assert {e["service"] for e in body["timeline"]} == {
            "orders",
            "consumers",
            "kitchen",
            "accounting",
        }


async def test_timeline_route(api: httpx.AsyncClient, rejected_order: Document) -> None:
    order_id = rejected_order["_id"]
    response = await api.get(f"/orders/{order_id}/timeline")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"order_id", "saga", "timeline"}
    assert body["order_id"] == order_id
    assert body["saga"] == rejected_order["saga"]
    assert timeline_events(body["timeline"]) == timeline_events(rejected_order["by_time"])
    assert underscore_keys(body) == []

    missing = uuid.uuid4()
    not_found = await api.get(f"/orders/{missing}/timeline")
    assert not_found.status_code == 404
    assert not_found.json()["detail"] == f"order {missing} not found"
    assert "x-read-model-position" in not_found.headers
    assert (await api.get("/orders/not-a-uuid/timeline")).status_code == 422


async def test_timeline_route_honours_the_consistency_token(
    mongo_url: str, mongo_database: str, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(1, version=1)
    await db["orders"].insert_one(document)
    async with query_api(mongo_url, mongo_database, timeout=0.3) as api:
        path = f"/orders/{document['_id']}/timeline"
        reached = await api.get(path, headers={"X-Consistency-Token": token(document["_id"], 1)})
        ahead = await api.get(path, headers={"X-Consistency-Token": token(document["_id"], 2)})
        other = await api.get(path, headers={"X-Consistency-Token": "garbage"})
    assert (reached.status_code, ahead.status_code, other.status_code) == (200, 503, 400)


async def test_documents_from_before_the_saga_are_served_with_empty_saga_fields(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(1, status="APPROVED")
    for field in ("saga", "timeline", "failed_step", "_applied", "_rev"):
        del document[field]
    await db["orders"].insert_one(document)

    for path in (f"/orders/{document['_id']}", f"/orders/{document['_id']}/timeline"):
        response = await api.get(path)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["saga"] == {
            "state": None,
            "consumer_verification": None,
            "ticket": None,
            "card_authorization": None,
            "failed_step": None,
            "reason": None,
        }
        assert body["timeline"] == []
    assert (await api.get(f"/orders/{document['_id']}")).json()["failed_step"] is None


async def test_order_id_comes_from_the_id_when_the_document_lacks_it(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(1)
    del document["order_id"]
    await db["orders"].insert_one(document)
    body = (await api.get(f"/orders/{document['_id']}")).json()
    assert body["order_id"] == document["_id"]
    assert underscore_keys(body) == []


# --- documents whose OrderCreated is not applied yet ---------------------------------


def partial_doc(order_id: str | None = None) -> Document:
    """What the projection holds when the consumers service answered before orders'
    OrderCreated was applied: saga fields only, no created_position, no version."""
    order_id = order_id or str(uuid.uuid4())
    return {
        "_id": order_id,
        "order_id": order_id,
        "saga": {
            "state": None,
            "consumer_verification": "VERIFIED",
            "ticket": None,
            "card_authorization": None,
            "failed_step": None,
            "reason": None,
        },
        "timeline": [entry("consumers", "consumers.ConsumerVerified.v1", now_ms())],
        "_applied": {"consumers": 1},
        "_rev": 1,
    }


async def test_a_document_without_created_position_is_not_visible(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    visible = order_doc(3)
    missing = partial_doc()
    null = {**partial_doc(), "created_position": None, "customer_id": "customer-a"}
    await db["orders"].insert_many([visible, missing, null])

    for hidden in (missing, null):
        for path in (f"/orders/{hidden['_id']}", f"/orders/{hidden['_id']}/timeline"):
            response = await api.get(path)
            assert response.status_code == 404, response.text
            assert response.json()["detail"] == f"order {hidden['_id']} not found"
    assert (await api.get(f"/orders/{visible['_id']}")).status_code == 200

    for path, params in [
        ("/orders", {}),
        ("/orders", {"cursor": "4"}),
        ("/orders", {"customer_id": "customer-a"}),
        ("/consumers/customer-a/orders", {}),
    ]:
        response = await api.get(path, params=params)
        assert response.status_code == 200, response.text
        assert [item["order_id"] for item in response.json()["items"]] == [visible["_id"]]


async def test_read_your_writes_keeps_waiting_on_a_document_not_visible_yet(
    mongo_url: str, mongo_database: str, db: AsyncDatabase[Document]
) -> None:
    hidden = partial_doc()
    # Even a version (which the projection never sets before OrderCreated) does not
    # make it visible.
    hidden["version"] = 1
    await db["orders"].insert_one(hidden)
    async with query_api(mongo_url, mongo_database, timeout=0.3) as api:
        for path in (f"/orders/{hidden['_id']}", "/orders"):
            response = await api.get(path, headers={"X-Consistency-Token": token(hidden["_id"], 1)})
            assert response.status_code == 503, response.text
            assert "not caught up" in response.json()["detail"]


# --- staleness headers: the orders topic of the orders projection only ---------------


async def test_staleness_headers_ignore_other_topics_and_projections(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(1)
    await db["orders"].insert_one(document)
    orders_time = now_ms() - timedelta(seconds=60)
    newer = now_ms() - timedelta(seconds=1)
    await db["projection_progress"].insert_many(
        [
            progress_doc(0, 12, orders_time - timedelta(seconds=5)),
            progress_doc(1, 10, orders_time),
            # The orders projection on the other services' topics: other logs.
            progress_doc(0, 900, newer, topic="consumers"),
            progress_doc(0, 901, newer, topic="kitchen"),
            progress_doc(1, 902, newer, topic="accounting"),
            # Other projections, on the orders topic or not.
            progress_doc(0, 903, newer, projection="tickets", topic="kitchen"),
            progress_doc(0, 904, newer, projection="audit", topic="orders"),
        ]
    )

    paths = [
        f"/orders/{document['_id']}",
        f"/orders/{document['_id']}/timeline",
        f"/orders/{uuid.uuid4()}",
        "/orders",
        "/consumers/customer-a/orders",
    ]
    for path in paths:
        answer = await api.get(path)
        assert answer.status_code in (200, 404)
        assert answer.headers["x-read-model-position"] == "12", path
        assert datetime.fromisoformat(answer.headers["x-read-model-event-time"]) == orders_time
        assert 60.0 <= float(answer.headers["x-read-model-age"]) < 70.0


async def test_no_orders_topic_progress_means_no_progress(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    await db["projection_progress"].insert_one(progress_doc(0, 50, now_ms(), topic="kitchen"))
    response = await api.get("/orders")
    assert response.headers["x-read-model-position"] == "0"
    assert "x-read-model-event-time" not in response.headers


# --- a consumer's orders ---------------------------------------------------------------


async def test_consumer_orders_is_the_list_filtered_by_customer(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    documents = [
        order_doc(position, customer_id="consumer-7" if position % 3 else "consumer-8")
        for position in range(1, 31)
    ]
    documents[4]["status"] = documents[10]["status"] = "APPROVED"  # consumer-7's
    await db["orders"].insert_many(documents)

    mine = sorted(
        (d["created_position"] for d in documents if d["customer_id"] == "consumer-7"),
        reverse=True,
    )
    pages = await walk(api, "/consumers/consumer-7/orders", limit=7)
    assert [len(page) for page in pages] == [7, 7, 6]
    assert [position for page in pages for position in page] == mine
    assert pages == await walk(api, "/orders", customer_id="consumer-7", limit=7)

    approved = (await api.get("/consumers/consumer-7/orders", params={"status": "APPROVED"})).json()
    assert positions(approved) == [11, 5]
    default = (await api.get("/consumers/consumer-7/orders")).json()
    # consumer-7 has exactly 20 orders: one full page of the default size, no next one.
    assert len(default["items"]) == 20 and default["next_cursor"] is None
    assert {item["customer_id"] for item in default["items"]} == {"consumer-7"}
    nobody = await api.get("/consumers/consumer-9/orders")
    assert nobody.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "params, status",
    [
        ({"status": "SHIPPED"}, 422),
        ({"limit": 0}, 422),
        ({"limit": 101}, 422),
        ({"cursor": "abc"}, 400),
        ({"consistency_token": "garbage"}, 400),
    ],
)
async def test_consumer_orders_validates_like_the_list(
    api: httpx.AsyncClient, params: Document, status: int
) -> None:
    assert (await api.get("/consumers/consumer-7/orders", params=params)).status_code == status


async def test_consumer_orders_honours_the_consistency_token(
    mongo_url: str, mongo_database: str, db: AsyncDatabase[Document]
) -> None:
    document = order_doc(1, customer_id="consumer-7")
    await db["orders"].insert_one(document)
    async with query_api(mongo_url, mongo_database, timeout=0.3) as api:
        path = "/consumers/consumer-7/orders"
        reached = await api.get(path, params={"consistency_token": token(document["_id"], 1)})
        ahead = await api.get(path, params={"consistency_token": token(document["_id"], 2)})
    assert reached.status_code == 200 and positions(reached.json()) == [1]
    assert ahead.status_code == 503


# --- tickets ----------------------------------------------------------------------------


def ticket_doc(
    updated_at: datetime,
    *,
    restaurant_id: str = "restaurant-1",
    status: str = "CREATE_PENDING",
    order_id: str | None = None,
) -> Document:
    order_id = order_id or str(uuid.uuid4())
    document: Document = {
        "_id": order_id,
        "order_id": order_id,
        "restaurant_id": restaurant_id,
        "consumer_id": "consumer-7",
        "line_items": [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}],
        "total_cents": 2500,
        "status": status,
        "reason": None,
        "version": 1 if status == "CREATE_PENDING" else 2,
        "updated_at": updated_at,
        "_applied": {"kitchen": 1},
        "_rev": 1,
    }
    if status == "REJECTED":
        document.update(consumer_id=None, line_items=[], total_cents=None, reason="closed")
    return document


async def test_get_ticket(api: httpx.AsyncClient, db: AsyncDatabase[Document]) -> None:
    pending = ticket_doc(now_ms())
    rejected = ticket_doc(now_ms(), status="REJECTED")
    await db["tickets"].insert_many([pending, rejected])

    for document in (pending, rejected):
        response = await api.get(f"/tickets/{document['_id']}")
        assert response.status_code == 200
        body = response.json()
        assert datetime.fromisoformat(body.pop("updated_at")) == document["updated_at"]
        assert body == {
            key: value
            for key, value in document.items()
            if not key.startswith("_") and key != "updated_at"
        }
    assert (await api.get(f"/tickets/{rejected['_id']}")).json()["consumer_id"] is None

    missing = uuid.uuid4()
    not_found = await api.get(f"/tickets/{missing}")
    assert not_found.status_code == 404
    assert not_found.json()["detail"] == f"ticket {missing} not found"
    assert (await api.get("/tickets/not-a-uuid")).status_code == 422


async def test_ticket_order_id_comes_from_the_id(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    document = ticket_doc(now_ms())
    del document["order_id"]
    await db["tickets"].insert_one(document)
    body = (await api.get(f"/tickets/{document['_id']}")).json()
    assert body["order_id"] == document["_id"]
    assert underscore_keys(body) == []


@pytest.fixture
async def tickets(db: AsyncDatabase[Document]) -> list[Document]:
    """Twelve tickets; several share an updated_at (ties are broken by _id, descending)."""
    base = now_ms() - timedelta(hours=1)
    spec = [
        (0, "restaurant-1", "CREATE_PENDING"),
        (1, "restaurant-2", "REJECTED"),
        (1, "restaurant-1", "AWAITING_ACCEPTANCE"),
        (1, "restaurant-1", "CREATE_PENDING"),
        (2, "restaurant-2", "CANCELLED"),
        (3, "restaurant-1", "AWAITING_ACCEPTANCE"),
        (3, "restaurant-2", "AWAITING_ACCEPTANCE"),
        (3, "restaurant-1", "CANCELLED"),
        (3, "restaurant-1", "CREATE_PENDING"),
        (4, "restaurant-2", "CREATE_PENDING"),
        (5, "restaurant-1", "REJECTED"),
        (6, "restaurant-1", "AWAITING_ACCEPTANCE"),
    ]
    documents = [
        ticket_doc(base + timedelta(seconds=s), restaurant_id=r, status=status)
        for s, r, status in spec
    ]
    await db["tickets"].insert_many(documents)
    return documents


def newest(documents: list[Document]) -> list[str]:
    ordered = sorted(documents, key=lambda d: (d["updated_at"], d["_id"]), reverse=True)
    return [d["_id"] for d in ordered]


async def walk_tickets(api: httpx.AsyncClient, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor is not None else {})}
        response = await api.get("/tickets", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([item["order_id"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "next_cursor never became null"


async def test_ticket_list_newest_first_and_paged(
    api: httpx.AsyncClient, tickets: list[Document]
) -> None:
    everything = (await api.get("/tickets")).json()
    assert [item["order_id"] for item in everything["items"]] == newest(tickets)
    assert everything["next_cursor"] is None
    assert underscore_keys(everything) == []

    # Pages cut through the groups of equal updated_at.
    for limit in (1, 2, 3, 5):
        pages = await walk_tickets(api, limit=limit)
        assert all(len(page) == limit for page in pages[:-1])
        assert [order_id for page in pages for order_id in page] == newest(tickets)


async def test_ticket_list_filters(api: httpx.AsyncClient, tickets: list[Document]) -> None:
    def expected(restaurant: str | None, status: str | None) -> list[str]:
        return newest(
            [
                d
                for d in tickets
                if restaurant in (None, d["restaurant_id"]) and status in (None, d["status"])
            ]
        )

    for restaurant, status in [
        ("restaurant-1", None),
        ("restaurant-2", None),
        (None, "AWAITING_ACCEPTANCE"),
        (None, "REJECTED"),
        ("restaurant-1", "CREATE_PENDING"),
        ("restaurant-3", None),
    ]:
        params = {
            key: value
            for key, value in (("restaurant_id", restaurant), ("status", status))
            if value is not None
        }
        pages = await walk_tickets(api, limit=2, **params)
        assert [order_id for page in pages for order_id in page] == expected(restaurant, status)


@pytest.mark.parametrize(
    "params",
    [{"status": "APPROVED"}, {"status": "create_pending"}, {"limit": 0}, {"limit": 101}],
)
async def test_ticket_list_bad_status_or_limit_is_422(
    api: httpx.AsyncClient, params: Document
) -> None:
    response = await api.get("/tickets", params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", next(iter(params))]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "!!!",
        "12",
        b64(b"[]"),
        b64(b'[1, ""]'),
        b64(b'["1", "x"]'),
        b64(b'[1.5, "x"]'),
        b64(b'[true, "x"]'),
        b64(b"[1, 2]"),
        b64(b'{"t": 1}'),
        b64(b'[99999999999999999999, "x"]'),
        b64(b"\xff\xfe"),
        b64(b'[1, "a\\ud800b"]'),  # a lone surrogate: no id MongoDB could be asked for
    ],
)
async def test_ticket_list_bad_cursor_is_400(api: httpx.AsyncClient, cursor: str) -> None:
    response = await api.get("/tickets", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["detail"] == "invalid cursor"


# --- stuck sagas ------------------------------------------------------------------------


async def test_stuck_sagas_are_old_pending_orders_oldest_first(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    now = now_ms()
    old_pending = order_doc(1, created_at=now - timedelta(minutes=10))
    old_pending["saga"]["consumer_verification"] = "VERIFIED"
    old_pending["timeline"].append(
        entry("consumers", "consumers.ConsumerVerified.v1", now - timedelta(minutes=9))
    )
    old_pending["timeline"].reverse()  # arrival order is not time order
    fresh_pending = order_doc(2, created_at=now - timedelta(seconds=10))
    old_approved = order_doc(3, status="APPROVED", created_at=now - timedelta(minutes=20))
    await db["orders"].insert_many([fresh_pending, old_approved, old_pending, partial_doc()])

    response = await api.get("/sagas/stuck", params={"older_than": 60})

    assert response.status_code == 200, response.text
    body = response.json()
    assert underscore_keys(body) == []
    [stuck] = body["items"]
    assert set(stuck) == {"order_id", "created_at", "age_seconds", "saga", "timeline"}
    assert stuck["order_id"] == old_pending["_id"]
    assert datetime.fromisoformat(stuck["created_at"]) == old_pending["created_at"]
    assert 600.0 <= stuck["age_seconds"] < 630.0
    as_of = datetime.fromisoformat(body["as_of"])
    assert stuck["age_seconds"] == round((as_of - old_pending["created_at"]).total_seconds(), 3)
    assert stuck["saga"] == old_pending["saga"]
    assert [e["event"] for e in stuck["timeline"]] == [
        "orders.OrderCreated.v1",
        "consumers.ConsumerVerified.v1",
    ]

    # A shorter threshold takes in the fresh one too, after the old one.
    both = (await api.get("/sagas/stuck", params={"older_than": 1.5})).json()
    assert [item["order_id"] for item in both["items"]] == [
        old_pending["_id"],
        fresh_pending["_id"],
    ]
    only_oldest = (await api.get("/sagas/stuck", params={"older_than": 1.5, "limit": 1})).json()
    assert [item["order_id"] for item in only_oldest["items"]] == [old_pending["_id"]]
    none = (await api.get("/sagas/stuck", params={"older_than": 3600})).json()
    assert none["items"] == []
    huge = await api.get("/sagas/stuck", params={"older_than": 1e300})
    assert huge.status_code == 200 and huge.json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"older_than": -5},
        {"older_than": 0},
        {"older_than": "abc"},
        {"older_than": "nan"},
        {"older_than": "inf"},
        {"older_than": 60, "limit": 0},
        {"older_than": 60, "limit": 101},
    ],
)
async def test_stuck_sagas_bad_parameters_are_422(api: httpx.AsyncClient, params: Document) -> None:
    response = await api.get("/sagas/stuck", params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][0] == "query"


# --- OpenAPI ----------------------------------------------------------------------------


async def test_openapi_documents_the_new_routes(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    paths = schema["paths"]
    expected_models = {
        "/orders/{order_id}": "Order",
        "/orders/{order_id}/timeline": "OrderTimeline",
        "/consumers/{consumer_id}/orders": "OrderPage",
        "/tickets/{order_id}": "Ticket",
        "/tickets": "TicketPage",
        "/sagas/stuck": "StuckSagas",
    }
    for path, model in expected_models.items():
        operation = paths[path]["get"]
        assert operation["summary"] and operation["description"]
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}, path
    for path in ("/orders/{order_id}/timeline", "/consumers/{consumer_id}/orders"):
        operation = paths[path]["get"]
        assert "X-Read-Model-Position" in operation["responses"]["200"]["headers"]
        parameters = {parameter["name"] for parameter in operation["parameters"]}
        assert {"X-Consistency-Token", "consistency_token"} <= parameters
    stuck = {p["name"]: p for p in paths["/sagas/stuck"]["get"]["parameters"]}
    assert stuck["older_than"]["required"] is True
    components = schema["components"]["schemas"]
    assert set(components["Saga"]["properties"]) == {
        "state",
        "consumer_verification",
        "ticket",
        "card_authorization",
        "failed_step",
        "reason",
    }
    assert set(components["TimelineEntry"]["properties"]) == {
        "service",
        "event",
        "time",
        "event_id",
        "detail",
    }
    assert {"saga", "timeline", "failed_step"} <= set(components["Order"]["properties"])
