"""Error answers as RFC 9457 problem details (``application/problem+json``).

Every API answers its errors in this one shape; `Problem` is the schema the OpenAPI
documents list for each error status. A problem body can always be encoded: what it
echoes of the request (a validation error's ``input``) is made JSON-safe first, and a
body that still cannot be encoded falls back to its title and status.
"""

import json
import logging
import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_ECHO_LIMIT = 200  # characters of a bad value a 422 echoes at most


class Problem(BaseModel):
    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong this time.")


class FieldError(BaseModel):
    type: str = Field(description="The kind of error (pydantic's error type).")
    loc: list[str | int] = Field(
        description="Where: `body`, `query`, `path` or `header`, then the field."
    )
    msg: str
    input: str | int | float | bool | None = Field(
        default=None,
        description="The value refused, when it is a scalar (text cut to 200 characters).",
    )
    ctx: dict[str, Any] | None = Field(default=None, description="The limit that was broken.")


class ValidationProblem(Problem):
    errors: list[FieldError] = Field(description="Each invalid field.")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (TypeError, ValueError):  # not JSON, NaN, a lone surrogate: never a 500
            log.exception("a problem body could not be encoded; answered without it")
            status = self.status_code
            fallback = {"type": "about:blank", "title": _phrase(status), "status": status}
            return json.dumps(fallback).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """A problem-details answer (``title`` defaults to the status's phrase)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title or _phrase(status)}
    body["status"] = status
    if detail is not None:
        body["detail"] = detail
    body.update(extensions)
    return ProblemResponse(body, status_code=status, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting ``statuses`` with the `Problem` schema."""
    schema = Problem.model_json_schema()
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }


# ------------------------------------------------------------ values made JSON-safe


def safe_text(value: str, limit: int = _ECHO_LIMIT) -> str:
    """``value`` cut to ``limit`` characters, lone surrogates written as ``\\udXXX``."""
    if len(value) > limit:
        value = value[:limit] + "…"
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_scalar(value: Any) -> str | int | float | bool | None:
    """A value that JSON can always encode: NaN/inf and huge integers become text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 64 else "an integer beyond 64 bits"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, bytes | bytearray):
        return safe_text(bytes(value[: _ECHO_LIMIT * 4]).decode("utf-8", "replace"))
    return safe_text(str(value))


def safe_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's errors as `FieldError`s: ``input`` only when a scalar, all JSON-safe."""
    safe: list[dict[str, Any]] = []
    for error in errors:
        item: dict[str, Any] = {
            "type": safe_text(str(error.get("type", "value_error"))),
            "loc": [
                part
                if isinstance(part, int) and not isinstance(part, bool)
                else safe_text(str(part))
                for part in error.get("loc", ())
            ],
            "msg": safe_text(str(error.get("msg", "")), limit=1000),
        }
        value = error.get("input")
        if value is None or isinstance(value, str | int | float | bool | bytes | bytearray):
            item["input"] = safe_scalar(value)
        ctx = error.get("ctx")
        if isinstance(ctx, Mapping):
            item["ctx"] = {safe_text(str(key)): safe_scalar(val) for key, val in ctx.items()}
        safe.append(item)
    return safe


def validation_problem(errors: Sequence[Any], detail: str | None = None) -> ProblemResponse:
    """The 422 answer: the request is well-formed HTTP but its values are not valid."""
    safe = safe_errors(errors)
    return problem(
        422,
        detail=detail or f"{len(safe)} invalid field{'s' if len(safe) != 1 else ''}",
        errors=safe,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Validation errors and HTTP errors (404, 405, 400...) answered as problems."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> Response:
        return validation_problem(error.errors())

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> Response:
        detail: str | None = error.detail if isinstance(error.detail, str) else None
        if detail == _phrase(error.status_code):
            detail = None
        if error.status_code < 200 or error.status_code in (204, 304):
            return Response(status_code=error.status_code, headers=error.headers)
        return problem(
            error.status_code,
            detail=safe_text(detail, limit=2000) if detail else None,
            headers=error.headers,
        )
