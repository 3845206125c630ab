"""The one factory of every API's FastAPI app: the command APIs and the query API.

Each app gets the request guard (``request_guard.py``), problem-details answers for
every error (``problems.py``), API docs served from a packaged copy of Swagger UI and
ReDoc (``fastapi-offline``: ``/docs`` and ``/redoc`` work offline, no CDN), and an OpenAPI
document that lists, for every operation, each status it can answer with the problem
schema: the guard's (408, 413, 415, 422 on a body), 422 on parameters, and the ones the
API says apply (``statuses``, e.g. 404 on a path with an id).
"""

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from opentelemetry import context
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from kernel import tracing
from kernel.problems import (
    PROBLEM_MEDIA_TYPE,
    FieldError,
    Problem,
    ValidationProblem,
    install_problem_handlers,
)
from kernel.request_guard import RequestGuard, RequestLimits

Statuses = Callable[[str, str, dict[str, Any]], Iterable[int]]
"""``(path, method, operation) -> statuses`` that apply beside the generic ones."""

_WITH_BODY = {
    408: "The body did not arrive within BODY_READ_TIMEOUT seconds; the connection is closed.",
    413: "The body is larger than MAX_BODY_BYTES; the connection is closed.",
    415: "The body is not JSON (send Content-Type: application/json).",
}
_DESCRIPTIONS = {
    422: "Invalid input: each field's error in `errors`; nothing was changed.",
    **_WITH_BODY,
}
_COMPONENTS: dict[str, type[BaseModel]] = {
    "Problem": Problem,
    "ValidationProblem": ValidationProblem,
    "FieldError": FieldError,
}
_REF = "#/components/schemas/{model}"


def create_api(
    *,
    statuses: Statuses | None = None,
    limits: RequestLimits | None = None,
    documents: Iterable[Callable[[dict[str, Any]], object]] = (),
    **fastapi: Any,
) -> FastAPI:
    """A FastAPI app (``fastapi`` are its arguments: title, version, lifespan...);
    ``documents`` complete its OpenAPI document (each changes it in place)."""
    # FastAPI's own request spans, when the process traces (kernel.tracing).
    app = FastAPIOffline(**{"telemetry": tracing.fastapi_telemetry(), **fastapi})
    if tracing.traces_requests():
        # fastapi-offline makes a FastAPI; this subclass only changes how it is called.
        app.__class__ = HeadSampledAPI
    install_problem_handlers(app)
    app.add_middleware(RequestGuard, limits=limits or RequestLimits())
    document_problems(app, statuses or (lambda path, method, operation: ()), documents)
    return app


class HeadSampledAPI(FastAPI):
    """An API whose process traces: a request its sampler does not sample, and a health
    probe, skip FastAPI's telemetry altogether (``kernel.tracing.untraced_context``, ADR
    32) and are handled as FastAPI handles every request when its telemetry is off."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        untraced = tracing.untraced_context(scope)
        if untraced is None:  # FastAPI's telemetry traces it
            await super().__call__(scope, receive, send)
            return
        if self.root_path:  # what FastAPI.__call__ does before its telemetry
            scope["root_path"] = self.root_path
        token = context.attach(untraced)
        try:
            await Starlette.__call__(self, scope, receive, send)
        finally:
            context.detach(token)


def document_problems(
    app: FastAPI,
    statuses: Statuses,
    documents: Iterable[Callable[[dict[str, Any]], object]] = (),
) -> None:
    """Post-process the app's OpenAPI document once, when it is first asked for."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()  # generate() caches it in app.openapi_schema
            add_problems(document, statuses)
            for complete in documents:
                complete(document)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_problems(document: dict[str, Any], statuses: Statuses) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, model in _COMPONENTS.items():
        schema = model.model_json_schema(ref_template=_REF)
        schema.pop("$defs", None)
        schemas[name] = schema
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "head", "options"):
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            wanted = set(statuses(path, method, operation))
            if "{" in path:  # no such resource, or a value that makes a path of none
                wanted.add(404)
            if "requestBody" in operation:
                wanted |= {*_WITH_BODY, 422}
            if operation.get("parameters"):
                wanted.add(422)
            for status in wanted:
                responses.setdefault(str(status), {})
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                name = "ValidationProblem" if code == "422" else "Problem"
                response["content"] = {
                    PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _REF.format(model=name)}}
                }
                default = _DESCRIPTIONS.get(int(code)) or HTTPStatus(int(code)).phrase
                if not response.get("description") or code == "422":
                    response["description"] = default
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
