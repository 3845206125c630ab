"""HTTP plumbing shared by the command APIs: error mapping, message metadata, auth."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from eventsourcing.persistence import IntegrityError
from fastapi import FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers

from write_side.kernel import idempotency
from write_side.kernel.application import ServiceApplication
from write_side.kernel.auth import (
    Caller,
    InvalidToken,
    TokenVerifier,
    check_every_route_guarded,
    install_auth,
)
from write_side.kernel.errors import ApplicationClosed, DomainError, NotFound
from write_side.kernel.idempotency import IdempotencyMiddleware
from write_side.kernel.metadata import MessageMetadata

ID_PATTERN = r"^[A-Za-z0-9_.\-]+$"
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
"""A business id (consumer, restaurant, menu item) in a request body."""
IdInPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
"""The same, in a URL path."""


class Strict(BaseModel):
    """Request bodies refuse unknown fields: a typo is a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(_: Request, error: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(error)})

    @app.exception_handler(DomainError)
    async def forbidden_by_state(_: Request, error: DomainError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(error)})

    @app.exception_handler(ApplicationClosed)
    async def shutting_down(_: Request, error: ApplicationClosed) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"detail": "the service is shutting down; retry"},
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(IntegrityError)
    async def concurrency_conflict(_: Request, __: IntegrityError) -> JSONResponse:
        return JSONResponse(
            status_code=409,
            content={
                "detail": "the aggregate was changed by another command at the same time; "
                "reload it and retry"
            },
        )


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


App = TypeVar("App", bound=ServiceApplication)


def _verified_subject(api: FastAPI) -> Callable[[Headers], Awaitable[str | None]]:
    """Who sends a request, for its Idempotency-Key's scope: the subject of its valid
    bearer token (``None`` without one: the route refuses the request)."""

    async def subject(headers: Headers) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        verifier: TokenVerifier = api.state.token_verifier
        try:
            principal = await verifier.verify(token.strip())
        except InvalidToken:
            return None
        return principal.subject

    return subject


def _document_with(api: FastAPI, *additions: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Let ``additions`` complete the app's OpenAPI document once it is generated."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = generate()
            for addition in additions:
                schema = addition(schema)
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def command_api(
    title: str, service: str, open_application: Callable[[], App]
) -> tuple[FastAPI, Callable[[Request], Awaitable[App]]]:
    """A command service's FastAPI app and the dependency that gives its Application.

    The Application is opened once at start-up (``app.state.<service>``) and closed
    at shutdown; domain errors map to HTTP as above; ``GET /health`` answers, to anyone.
    Every other route needs a bearer token and states its rule (``write_side.kernel.auth``):
    the app does not start with a route that has none.
    """

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        check_every_route_guarded(api)
        application = open_application()
        setattr(api.state, service, application)
        yield
        application.close()

    api = FastAPI(title=title, version="1", lifespan=lifespan)
    install_error_handlers(api)
    install_auth(api, open_paths={"/health"})
    api.add_middleware(
        IdempotencyMiddleware,
        recorder=lambda: getattr(api.state, service).recorder,
        caller=_verified_subject(api),
    )
    _document_with(api, idempotency.document)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def application(request: Request) -> App:
        opened: App = getattr(request.app.state, service)
        return opened

    return api, application
