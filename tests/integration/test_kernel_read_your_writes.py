"""Read-your-writes and staleness in the kernel (``kernel/read_models.py``), on the
tallies read model of the kernel's own example, against a real MongoDB-wire server: a
query given a consistency token waits until the read model holds that version, answers
``503`` with ``Retry-After`` when it does not get there in time, and every answer says
how stale it is. A project without the reference saga keeps these tests."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kernel.projection_runtime import ProjectionRunner
from kernel.read_models import LiveCollections
from tests.kernel_example import queries
from tests.kernel_example.contracts import registered
from tests.kernel_example.messages import TallyLog
from tests.kernel_example.projection import TALLIES
from tests.mongo_commands import CommandCounter
from tests.support import wait_for_async

# Fixed, not uuid4(): every pytest-xdist worker must collect the same test ids.
A_TALLY = "0b6c5f0e-6a8f-4b5e-9a53-2d1c3f9e8a71"
TIMEOUT = 0.5  # READ_YOUR_WRITES_TIMEOUT of the app under test


@pytest.fixture(autouse=True)
def tally_contracts() -> Iterator[None]:
    with registered():
        yield


@pytest.fixture
async def database(mongo_url: str, mongo_database: str) -> AsyncIterator[AsyncDatabase[Any]]:
    counter = CommandCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        mongo_url, tz_aware=True, event_listeners=[counter]
    )
    database = client[mongo_database]
    database.commands = counter.commands  # type: ignore[attr-defined]
    yield database
    await client.close()


class Settings:
    read_your_writes_timeout = TIMEOUT


@pytest.fixture
def app(database: AsyncDatabase[Any]) -> FastAPI:
    app = FastAPI()
    app.state.database = database
    app.state.live = LiveCollections(database)
    app.state.settings = Settings()
    app.include_router(queries.router)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tallies") as client:
        yield client


@pytest.fixture
async def runner(database: AsyncDatabase[Any]) -> ProjectionRunner:
    runner = ProjectionRunner(TALLIES, database, None)
    await runner.prepare()
    return runner


def looked_for_tallies(commands: list[tuple[str, str]]) -> bool:
    return any(name == "find" and on.startswith("tallies") for name, on in commands)


def token(tally_id: str, version: int, position: int = 1, service: str = "tallies") -> str:
    return f"{service}:{position}:{tally_id}:{version}"


async def test_a_reached_token_answers_at_once_with_the_staleness_headers(client, runner):
    log = TallyLog()
    started = log.started()
    tally_id = started.key.decode()  # type: ignore[union-attr]
    await runner.handle([started, log.added(tally_id, 4)])

    response = await client.get(
        f"/tallies/{tally_id}", params={"consistency_token": token(tally_id, 2)}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"total": 4, "version": 2}
    assert response.headers["X-Read-Model-Position"] == "2"
    assert float(response.headers["X-Read-Model-Age"]) >= 0


async def test_a_query_waits_for_its_token_and_then_reads_its_own_write(
    app, client, runner, database
):
    log = TallyLog()
    started = log.started()
    tally_id = started.key.decode()  # type: ignore[union-attr]
    await runner.handle([started])
    app.state.settings.read_your_writes_timeout = 30
    asked = len(database.commands)

    query = asyncio.create_task(
        client.get(f"/tallies/{tally_id}", headers={"X-Consistency-Token": token(tally_id, 2)})
    )
    # The query is waiting once it has looked for version 2 and not found it.
    await wait_for_async(lambda: looked_for_tallies(database.commands[asked:]) or query.done())
    assert not query.done(), "answered before the write it was asked to wait for"
    await runner.handle([log.added(tally_id, 3)])
    response = await asyncio.wait_for(query, timeout=10)

    assert response.status_code == 200, response.text
    assert response.json() == {"total": 3, "version": 2}


async def test_a_token_not_reached_in_time_is_a_503_with_retry_after(client, runner):
    log = TallyLog()
    started = log.started()
    tally_id = started.key.decode()  # type: ignore[union-attr]
    await runner.handle([started])

    response = await client.get(
        f"/tallies/{tally_id}", params={"consistency_token": token(tally_id, 5)}
    )

    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Read-Model-Position"] == "1"


@pytest.mark.parametrize(
    ("given", "why"),
    [
        (f"orders:1:{A_TALLY}:1", "consistency token of service 'orders'"),
        ("tallies:0:x:1", "malformed consistency token"),
    ],
)
async def test_another_services_or_a_malformed_token_is_a_400(client, runner, given, why):
    response = await client.get(f"/tallies/{uuid.uuid4()}", params={"consistency_token": given})

    assert response.status_code == 400
    assert why in response.json()["detail"]
