"""HTTP query API over the read models (the read side of the CQRS template).

Routes: ``/health``, ``/projections``, and the ``router`` of every other module of
``read_side/`` that has one at its top level (found in name order, so adding a domain's
query routes, ``read_side/<domain>.py``, edits nothing here): the event contracts' pages
(``/asyncapi``, ``/asyncapi.json``) and each read model's routes.

Run with ``uvicorn read_side.api:create_app --factory``. ``create_app`` is the one
composition root: its lifespan opens the ``pymongo.AsyncMongoClient`` (PyMongo's native
async client; Motor is deprecated) and closes it on shutdown; the routers find the
database and the settings in ``app.state``.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pymongo
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from contracts.discovery import modules_where
from kernel import health as process_health
from kernel import metrics as process_metrics
from kernel import tracing
from kernel.auth import OpsOnly, check_every_route_guarded, install_auth
from kernel.http_api import create_api
from kernel.logs import configure_logging
from kernel.problems import problem
from kernel.projections_status import ProjectionStatus, projections_status
from kernel.read_models import LiveCollections
from read_side.settings import QuerySettings

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 2.0  # seconds

_CONTRACTS_DOC = (
    "\n\n**Event contracts**: the events these read models are built from, every topic, "
    "message, header and payload schema: [AsyncAPI page](/asyncapi) "
    "([asyncapi.json](/asyncapi.json))."
)

_APP_DOC = (
    "Queries over the read models, which projections build from the services' events: "
    "they are eventually consistent with the commands."
    + _CONTRACTS_DOC
    + """
**Authorization.** Every route but `/health` and the contracts' pages needs a bearer
token (`401` without a valid one); customers see their own orders, restaurants their
own tickets, `ops` everything (`403` otherwise): docs/auth.md.

**Unavailable store.** When MongoDB cannot be reached, or does not answer within
`MONGODB_TIMEOUT` seconds, every route answers `503` with `Retry-After: 1` (and no
staleness headers) and `/health` answers `503`; once it is back, they answer again.
"""
)

router = APIRouter()


@router.get("/health", tags=["health"], summary="Liveness and MongoDB reachability")
async def health(request: Request) -> Response:
    """`200 {"status": "ok"}` when MongoDB answers a ping within 2 s (MONGODB_TIMEOUT if
    shorter), else a `503` problem."""
    database = cast(AsyncDatabase[dict[str, Any]], request.app.state.database)
    settings = cast(QuerySettings, request.app.state.settings)
    timeout = min(HEALTH_TIMEOUT, settings.mongodb_timeout)
    try:
        with pymongo.timeout(timeout):
            await database.command("ping")
    except PyMongoError as error:
        log.warning("health: MongoDB did not answer a ping: %s", error)
        detail = f"MongoDB did not answer a ping within {timeout:g} s"
        return problem(503, detail=detail, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ok"})


@router.get(
    "/projections",
    tags=["projections"],
    summary="Each projection's live collection, lag and rebuilds in progress",
    description="Per projection: the collection the query API reads and the version "
    "that built it, per topic partition the last offset applied and the broker's end "
    "offset, the lag in events and in seconds, and the rebuilds `cqrs replay` is "
    "running. Lags are null when the broker cannot be reached.",
    responses={503: {"description": "MongoDB is unreachable; retry later."}},
)
async def list_projections(request: Request, caller: OpsOnly) -> list[ProjectionStatus]:
    database = cast(AsyncDatabase[dict[str, Any]], request.app.state.database)
    settings = cast(QuerySettings, request.app.state.settings)
    statuses = await projections_status(database, settings.kafka_bootstrap_servers)
    return [ProjectionStatus.model_validate(status) for status in statuses]


def query_statuses(path: str, method: str, operation: dict[str, object]) -> set[int]:
    """Every route that reads MongoDB may answer 503 (unreachable); the contracts' pages
    do not read it."""
    return set() if path.startswith("/asyncapi") else {503}


def create_app(settings: QuerySettings | None = None) -> FastAPI:
    settings = settings or QuerySettings()
    configure_logging("query-api")
    tracing.configure_tracing("query-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_every_route_guarded(app)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_url,
            tz_aware=True,
            appname="query-api",
            timeoutMS=settings.mongodb_timeout * 1000,
        )
        try:
            app.state.settings = settings
            app.state.database = client[settings.mongodb_database]
            # Every read model's routes read through it: `cqrs replay` switches aliases.
            app.state.live = LiveCollections(app.state.database)
            yield
        finally:
            await client.close()

    app = create_api(
        statuses=query_statuses,
        title="Query API",
        version="0.2.0",
        summary="Read side of the event-sourced CQRS template: the MongoDB read models.",
        description=_APP_DOC,
        lifespan=lifespan,
    )
    # Health and the event contracts' pages (documentation, as /docs is) take no token.
    install_auth(app, open_paths={"/health", "/asyncapi", "/asyncapi.json"})
    app.include_router(router)
    process_metrics.install(app, "query-api")

    async def ready() -> dict[str, str]:
        """MongoDB answers a ping (``/health/ready``; ``/health/live`` always answers)."""
        database = getattr(app.state, "database", None)
        if database is None:
            return {"mongodb": "not connected yet"}
        timeout = min(HEALTH_TIMEOUT, settings.mongodb_timeout)
        checks = {"mongodb": process_health.mongo_check(database)}
        return await process_health.problems_of(checks, timeout)

    process_health.install_routes(app, ready)
    for module in modules_where("read_side", "router", exclude=("api",)):
        app.include_router(module.router)
    # MongoDB away (ConnectionFailure, a timeout): the request guard answers 503.
    return app
