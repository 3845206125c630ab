"""Reading read models: the live collection behind each alias, read-your-writes with a
consistency token, and how stale an answer is.

The projections (``kernel/projection_runtime.py``) write the documents and their
progress; the query API's routes read them through these. A query route of a read model
takes the token with the :func:`consistency_token` dependency and calls
:meth:`ReadModel.caught_up` before it reads: that waits until the token's document holds
its version (``503`` with ``Retry-After: 1`` if it does not within the timeout) and gives
the staleness the route reports in its headers (``Staleness.headers``).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymongo import IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError
from starlette.applications import Starlette

from contracts.consistency import ConsistencyToken, InvalidToken

log = logging.getLogger(__name__)

Document = dict[str, Any]

PROGRESS = "projection_progress"
ALIASES = "projection_aliases"
ALIAS_CACHE_SECONDS = 1.0
READ_YOUR_WRITES_TIMEOUT = 5.0
"""Seconds a query carrying a consistency token waits at most (the query API's setting
``READ_YOUR_WRITES_TIMEOUT`` overrides it)."""


async def ensure_indexes(collection: AsyncCollection[Document], indexes: list[IndexModel]) -> None:
    """Create each index (a no-op when it exists).

    One the server refuses (e.g. the same keys under another name) is logged and
    skipped: the queries work without it. Any other error (the store is unreachable)
    is raised.
    """
    for index in indexes:
        try:
            await collection.create_indexes([index])
        except OperationFailure as error:
            log.warning(
                "could not create index %s on %s: %s", index.document["key"], collection.name, error
            )


STORE_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "MongoDB is unreachable (retry).",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            },
        },
    },
}
"""The OpenAPI ``responses`` of a query route that takes no consistency token."""


class LiveCollections:
    """The collection that serves each read model, through ``projection_aliases``.

    ``cqrs replay`` builds a new collection beside the live one and switches the alias
    only once it is complete (ADR 13), so whatever the alias names is whole. A read
    model without an alias (a deployment from before them) is its plain collection.
    Looked up at most once a second per read model: after a switch, answers may come
    from the previous (complete, no longer updated) collection for that long.
    """

    def __init__(self, database: AsyncDatabase[Document], ttl: float = ALIAS_CACHE_SECONDS):
        self._database = database
        self._aliases = database[ALIASES]
        self._ttl = ttl
        self._cache: dict[str, tuple[float, str]] = {}

    async def name(self, read_model: str) -> str:
        now = asyncio.get_running_loop().time()
        cached = self._cache.get(read_model)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        alias = await self._aliases.find_one({"_id": read_model}, {"collection": 1})
        name = read_model if alias is None else str(alias["collection"])
        self._cache[read_model] = (now, name)
        return name

    async def get(self, read_model: str) -> AsyncCollection[Document]:
        return self._database[await self.name(read_model)]


@dataclass(frozen=True)
class Staleness:
    """How far a projection has got, from its progress documents."""

    position: int  # highest log position applied in any partition; 0 if none
    event_time: datetime | None  # time of the newest applied event; None if none

    def headers(self, now: datetime) -> dict[str, str]:
        headers = {"X-Read-Model-Position": str(self.position)}
        if self.event_time is not None:
            # Clamped at zero: the writer's and reader's clocks may disagree a little.
            age = max(0.0, (now - self.event_time).total_seconds())
            headers["X-Read-Model-Event-Time"] = self.event_time.isoformat()
            headers["X-Read-Model-Age"] = f"{age:.3f}"
        return headers


class ReadModelDocument(BaseModel):
    """Base of the response models validated straight from read-model documents: the
    projection's bookkeeping (fields starting with ``_``) is dropped, and ``_id`` fills
    ``id_field`` when a document lacks it."""

    model_config = ConfigDict(extra="ignore")
    id_field: ClassVar[str] = "id"

    @model_validator(mode="before")
    @classmethod
    def _public_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        public = {key: value for key, value in data.items() if not str(key).startswith("_")}
        if public.get(cls.id_field) is None and "_id" in data:
            public[cls.id_field] = data["_id"]
        return public


def empty_list_if_null(value: Any) -> Any:
    """For a ``BeforeValidator``: a list field a document holds as null reads as ``[]``."""
    return [] if value is None else value


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """One page of a list read by keyset: ``class OrderPage(Page[Order]): ...``."""

    items: list[Item]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ReadModel:
    """The read model a projection keeps: its live collection, whether a document has
    reached a version (read-your-writes) and the projection's progress (staleness).

    A document's ``version`` is its aggregate's (the projections write it), so a
    consistency token is reached once the document of its aggregate holds its version or
    a later one. Staleness is the projection's progress on ``topic``, the log of the
    service whose tokens the read model honours (positions of other logs are not
    comparable). A subclass adds its queries, and ``visible``: the filter of documents
    that may be shown (the others count as not there yet), and ``indexes``: those its
    queries need.
    """

    visible: ClassVar[Document] = {}
    indexes: ClassVar[list[IndexModel]] = []

    def __init__(
        self,
        database: AsyncDatabase[Document],
        projection: str,
        *,
        topic: str | None = None,
        live: LiveCollections | None = None,
        read_your_writes_timeout: float = READ_YOUR_WRITES_TIMEOUT,
    ) -> None:
        self.projection = projection
        self.topic = topic or projection
        self.read_your_writes_timeout = read_your_writes_timeout
        self._database = database
        self._live = live or LiveCollections(database)
        self._progress = database[PROGRESS]
        self._staleness_read: asyncio.Future[Staleness] | None = None

    async def collection(self) -> AsyncCollection[Document]:
        """The live collection (``cqrs replay`` may have switched it to a rebuilt one)."""
        return await self._live.get(self.projection)

    async def ensure_indexes(self) -> None:
        """Create the indexes its queries need (the projection creates them too)."""
        if self.indexes:
            await ensure_indexes(await self.collection(), self.indexes)

    async def has_version(self, document_id: str, version: int) -> bool:
        collection = await self.collection()
        found = await collection.find_one(
            {"_id": document_id, "version": {"$gte": version}, **self.visible},
            projection={"_id": 1},
        )
        return found is not None

    async def wait_for_version(
        self, document_id: str, version: int, *, timeout: float, interval: float = 0.02
    ) -> bool:
        """Poll until the document holds ``version`` or later; False if the timeout passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.has_version(document_id, version):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(interval, remaining))
        return True

    async def caught_up(self, token: ConsistencyToken | None) -> Staleness:
        """Wait for the token (if any), then snapshot the projection's progress.

        Not reached within ``read_your_writes_timeout``: ``503`` with ``Retry-After: 1``
        and the staleness headers (the client retries).
        """
        if token is not None:
            timeout = self.read_your_writes_timeout
            if not await self.wait_for_version(token.aggregate_id, token.version, timeout=timeout):
                staleness = await self.staleness()
                raise HTTPException(
                    503,
                    f"the read model has not caught up with consistency token {token} yet "
                    f"({token.aggregate_id} version {token.version} not applied within "
                    f"{timeout:g} s); retry later",
                    headers={"Retry-After": "1", **staleness.headers(datetime.now(UTC))},
                )
        return await self.staleness()

    async def staleness(self) -> Staleness:
        """The projection's progress, read before the answer's documents.

        Requests that come while a read of it is in flight share that read: one query
        for them all under load. What it returns is never ahead of what they read next
        (the progress is written after the documents), only as fresh as a read that
        began at most one query's time before they came.
        """
        if self._staleness_read is None:
            read = asyncio.ensure_future(self._read_staleness())
            read.add_done_callback(self._staleness_read_done)
            self._staleness_read = read
        # Shielded: one request cancelled does not cancel the read the others await.
        return await asyncio.shield(self._staleness_read)

    def _staleness_read_done(self, read: "asyncio.Future[Staleness]") -> None:
        if self._staleness_read is read:
            self._staleness_read = None
        if not read.cancelled():
            read.exception()  # retrieved: not logged as "never retrieved" if none awaits

    async def _read_staleness(self) -> Staleness:
        position = 0
        event_time: datetime | None = None
        collection = await self._live.name(self.projection)
        async for progress in self._progress.find(
            {
                "projection": self.projection,
                "topic": self.topic,
                # Progress recorded before collections were versioned names none.
                "collection": (
                    {"$in": [collection, None]} if collection == self.projection else collection
                ),
            },
            projection={"position": 1, "event_time": 1},
        ):
            position = max(position, int(progress.get("position") or 0))
            applied: datetime | None = progress.get("event_time")
            if applied is not None:
                applied = aware(applied)  # a client without tz_aware=True
                event_time = applied if event_time is None else max(event_time, applied)
        return Staleness(position, event_time)


Model = TypeVar("Model", bound=ReadModel)


def read_model_of(
    app: Starlette,
    projection: str,
    *,
    kind: type[Model] = ReadModel,  # type: ignore[assignment]  # mypy#3737
    topic: str | None = None,
) -> Model:
    """The query API's one read model of ``projection`` (made at its first use, on the
    database, live collections and settings of ``app.state``): its requests share its
    progress reads."""
    models: dict[str, ReadModel] = app.state.__dict__.setdefault("read_models", {})
    model = models.get(projection)
    if model is None:
        settings = getattr(app.state, "settings", None)
        model = models[projection] = kind(
            app.state.database,
            projection,
            topic=topic,
            live=getattr(app.state, "live", None),
            read_your_writes_timeout=getattr(
                settings, "read_your_writes_timeout", READ_YOUR_WRITES_TIMEOUT
            ),
        )
    if not isinstance(model, kind):
        raise TypeError(f"read model {projection!r} is a {type(model).__name__}, not a {kind}")
    return model


def consistency_token(service: str) -> Callable[..., Awaitable[ConsistencyToken | None]]:
    """A dependency: the consistency token of a query (header ``X-Consistency-Token`` or
    query parameter ``consistency_token``), which must be one of ``service``'s commands.
    An empty one is no token; a malformed one, or another service's, is a ``400``."""

    async def token_of(
        header: Annotated[
            str | None,
            Header(
                alias="X-Consistency-Token",
                description="Consistency token from a command "
                "(service:position:aggregate_id:version).",
            ),
        ] = None,
        query: Annotated[
            str | None,
            Query(alias="consistency_token", description="Same as the X-Consistency-Token header."),
        ] = None,
    ) -> ConsistencyToken | None:
        header, query = header or None, query or None  # empty: absent, as a missing one
        if header is not None and query is not None and header != query:
            raise HTTPException(400, "X-Consistency-Token and consistency_token disagree")
        text = header if header is not None else query
        if text is None:
            return None
        try:
            token = ConsistencyToken.parse(text)
        except InvalidToken as error:
            raise HTTPException(400, str(error)) from None
        if token.service != service:
            raise HTTPException(
                400, f"consistency token of service {token.service!r} does not apply to {service!r}"
            )
        return token

    return token_of


CONSISTENCY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "A malformed consistency token, another service's, or a header "
        "and a query parameter that disagree."
    },
    503: {"description": "Not caught up with the consistency token (retry)."},
}
"""The answers ``consistency_token`` adds to a route's, for its ``responses=``."""

Limit = Annotated[int, Query(ge=1, le=100)]
"""How many items a page of a list route holds at most."""
Cursor = Annotated[str | None, Query(description="Opaque: a previous page's next_cursor.")]
"""Where a page of a list route starts: the previous page's ``next_cursor``."""

Position = TypeVar("Position")


def page_start(cursor: str | None, decode: Callable[[str], Position]) -> Position | None:
    """Where the page a list route was given ``cursor`` for starts: None for the first
    page (no cursor, or an empty one), else ``decode(cursor)``; a ``400`` when that
    raises ``ValueError`` (a malformed cursor)."""
    if not cursor:
        return None
    try:
        return decode(cursor)
    except ValueError:
        raise HTTPException(400, "invalid cursor") from None


def read_model_routes(
    projection: str,
    *,
    kind: type[Model] = ReadModel,  # type: ignore[assignment]  # mypy#3737
    topic: str | None = None,
    tags: list[str | Enum] | None = None,
) -> tuple[APIRouter, Callable[[Request], Awaitable[Model]]]:
    """The router of a read model's query routes (with those ``tags``), and the
    dependency that gives the read model (``read_model_of``). The router's lifespan (run
    inside the query API's, which opens the database) creates the read model's indexes,
    if it can."""

    @asynccontextmanager
    async def indexes(app: FastAPI) -> AsyncIterator[None]:
        try:  # idempotent
            await read_model_of(app, projection, kind=kind, topic=topic).ensure_indexes()
        except PyMongoError as error:
            # The projection creates them too; the API can serve without them.
            log.warning("could not ensure the %s read model's indexes: %s", projection, error)
        yield

    async def read_model(request: Request) -> Model:
        return read_model_of(request.app, projection, kind=kind, topic=topic)

    return APIRouter(lifespan=indexes, tags=tags), read_model
