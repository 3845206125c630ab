"""HTTP plumbing shared by the command APIs: error mapping, message metadata, auth."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from eventsourcing.persistence import IntegrityError
from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.params import Depends as Dependency
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware

from kernel import health as process_health
from kernel import idempotency, tracing
from kernel import metrics as process_metrics
from kernel.application import ServiceApplication
from kernel.auth import (
    Caller,
    InvalidToken,
    Principal,
    TokenVerifier,
    check_every_route_guarded,
    install_auth,
    requires,
)
from kernel.errors import ApplicationClosed, DomainError, NotFound
from kernel.http_api import create_api
from kernel.idempotency import IdempotencyMiddleware
from kernel.logs import configure_logging
from kernel.metadata import MessageMetadata, set_for_this_context
from kernel.problems import problem

ID_PATTERN = r"^[A-Za-z0-9_.\-]+$"
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
"""A business id (consumer, restaurant, menu item) in a request body."""
IdInPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
"""The same, in a URL path."""


def owner_in_path(parameter: str, role: str, what: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if they hold ``role`` and are the owner whose id is the
    path's ``parameter``, or ops; else 403 ("<what> <id> is not yours"). For routes
    whose resource is named in the path: ``Annotated[Principal,
    Depends(owner_in_path("restaurant_id", RESTAURANT, "restaurant"))]``."""

    async def path_owner(
        owner: Annotated[
            str, Path(alias=parameter, min_length=1, max_length=64, pattern=ID_PATTERN)
        ],
        caller: Annotated[Principal, Depends(requires(role))],
    ) -> Principal:
        caller.authorize(f"{what} {owner}", **{role: owner})
        return caller

    return path_owner


class Strict(BaseModel):
    """Request bodies refuse unknown fields (a typo is a 422, not silently ignored) and
    take each value only as its own JSON type: ``true`` or ``"100"`` is no integer."""

    model_config = ConfigDict(extra="forbid", strict=True)


class FromAggregate(BaseModel):
    """A response body read from an object's attributes of the same names (an
    aggregate, or what a command returned): ``AccountOut.model_validate(account)``."""

    model_config = ConfigDict(from_attributes=True)


def install_error_handlers(app: FastAPI) -> None:
    """The kernel's errors as problem details (RFC 9457)."""

    @app.exception_handler(NotFound)
    async def not_found(_: Request, error: NotFound) -> Response:
        return problem(404, detail=str(error))

    @app.exception_handler(DomainError)
    async def forbidden_by_state(_: Request, error: DomainError) -> Response:
        return problem(409, detail=str(error))

    @app.exception_handler(ApplicationClosed)
    async def shutting_down(_: Request, error: ApplicationClosed) -> Response:
        return problem(
            503, detail="the service is shutting down; retry", headers={"Retry-After": "1"}
        )

    @app.exception_handler(IntegrityError)
    async def concurrency_conflict(_: Request, __: IntegrityError) -> Response:
        return problem(
            409,
            detail="the aggregate was changed by another command at the same time; "
            "reload it and retry",
        )


def command_statuses(path: str, method: str, operation: dict[str, object]) -> set[int]:
    """What a command API's operation can answer besides 2xx and the guard's statuses:
    503 while it shuts down, 404 for an id in the path, 409 for a command."""
    if path == "/health":
        return set()
    statuses = {503}
    if "{" in path:
        statuses.add(404)
    if method in ("post", "put", "patch", "delete"):
        statuses.add(409)
    return statuses


async def command_metadata(
    caller: Caller,
    x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
) -> MessageMetadata:
    """Each HTTP command is its own cause; it joins the caller's correlation if given.
    The caller (token subject and roles) is recorded as its actor.

    Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` one in
    its thread pool, a thread hand-over per request for nothing.
    """
    command_id = str(uuid.uuid4())
    return MessageMetadata(
        correlation_id=x_correlation_id or command_id,
        causation_id=command_id,
        actor=caller.subject,
        actor_roles=tuple(sorted(caller.roles)),
    )


async def _request_metadata(
    metadata: Annotated[MessageMetadata, Depends(command_metadata)],
) -> None:
    set_for_this_context(metadata)


READY_TIMEOUT = 2.0
"""Seconds the store has to answer ``/health/ready``'s query."""

WRITING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CommandRoute(APIRoute):
    """A command API's route. A writing one (POST, PUT, PATCH, DELETE) runs with the
    request's message metadata (``command_metadata``) set: every event its commands save
    carries it, and the route itself need not mention it."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: set[str] | list[str] | None = None,
        dependencies: Sequence[Dependency] | None = None,
        **kwargs: Any,
    ) -> None:
        if WRITING_METHODS & {method.upper() for method in methods or ()}:
            dependencies = [*(dependencies or ()), Depends(_request_metadata)]
        super().__init__(path, endpoint, methods=methods, dependencies=dependencies, **kwargs)


App = TypeVar("App", bound=ServiceApplication)


async def _verified_subject(app: Starlette, headers: Headers) -> str | None:
    """Who sends a request, for its Idempotency-Key's scope: the subject of its valid
    bearer token (``None`` without one: the route refuses the request)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    verifier: TokenVerifier = app.state.token_verifier
    try:
        principal = await verifier.verify(token.strip())
    except InvalidToken:
        return None
    return principal.subject


def command_api(
    service: str, open_application: Callable[[], App]
) -> tuple[FastAPI, Callable[[Request], Awaitable[App]]]:
    """The FastAPI app of ``service``'s command API (its title: "<Service> command API")
    and the dependency that gives its Application.

    The Application is opened once at start-up (``app.state.<service>``) and closed
    at shutdown; domain errors map to HTTP as above; ``GET /health`` answers, to anyone.
    Every other route needs a bearer token and states its rule (``kernel.auth``):
    the app does not start with a route that has none. The app comes from
    ``http_api.create_api`` (the request guard, problem details, offline docs); every
    POST honours an ``Idempotency-Key`` (``kernel.idempotency``); every writing route
    sets the request's message metadata (``CommandRoute``).
    """

    configure_logging(f"{service}-api")
    tracing.configure_tracing(f"{service}-api")

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        check_every_route_guarded(api)
        application = open_application()
        setattr(api.state, service, application)
        yield
        application.close()

    idempotent = Middleware(
        IdempotencyMiddleware,
        recorder=lambda app: getattr(app.state, service).recorder,
        caller=_verified_subject,
    )
    api = create_api(
        title="".join(word.capitalize() for word in service.split("_")) + " command API",
        version="1",
        lifespan=lifespan,
        statuses=command_statuses,
        middleware=[idempotent],  # inside the request guard: it reads bodies the guard let in
        documents=[idempotency.document],
    )
    api.router.route_class = CommandRoute
    install_error_handlers(api)
    install_auth(api, open_paths={"/health"})
    process_metrics.install(api, f"{service}-api")

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def ready() -> dict[str, str]:
        """The store answers a query (``/health/ready``; ``/health/live`` always answers)."""
        opened: ServiceApplication | None = getattr(api.state, service, None)
        if opened is None:
            return {"store": "not opened yet"}
        check = process_health.store_check(opened.recorder)
        return await process_health.problems_of({"store": check}, READY_TIMEOUT)

    process_health.install_routes(api, ready)

    async def application(request: Request) -> App:
        opened: App = getattr(request.app.state, service)
        return opened

    return api, application
