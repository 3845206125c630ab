"""The request guard: one pure-ASGI middleware in front of every API.

It decides about a request's body before any route sees it, so no input reaches a
route that the route could not answer with a 4xx (docs/adr: request guard):

- ``413`` past ``MAX_BODY_BYTES`` (default 1 MiB): at once on ``Content-Length``, while
  streaming when chunked; the connection is closed (the rest is never read);
- ``408`` when the body has not arrived within ``BODY_READ_TIMEOUT`` seconds (default
  10) of the request's head; the connection is closed;
- ``415`` for a body that is not JSON (``application/json`` and ``application/*+json``
  pass; a body without ``Content-Type`` does not);
- ``422`` for a body that strict JSON refuses (NaN, Infinity, lone surrogates, bad
  syntax: pydantic-core's parser) or that holds a number no store keeps: a float that
  overflows (``1e400``) or an integer beyond 64 bits;
- ``503`` with ``Retry-After`` for an error that says a server the API needs is away
  (``kernel/unavailable.py``), wherever it was raised;
- ``500`` (a problem, logged) for an exception no handler answered, the connection kept.

The body is read once, here, and handed to the app as it came.
"""

import asyncio
import logging
import math
from typing import Any

from pydantic import Field
from pydantic_core import from_json
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel.problems import problem, validation_problem
from kernel.unavailable import unavailable_problem, unavailable_server

log = logging.getLogger(__name__)

INT_LIMIT = 2**63
"""Integers a body may hold: signed 64 bits, what MongoDB and PostgreSQL store."""


class RequestLimits(BaseSettings):
    """Environment: MAX_BODY_BYTES, BODY_READ_TIMEOUT (every API reads them)."""

    model_config = SettingsConfigDict(extra="ignore")

    max_body_bytes: int = Field(default=1 << 20, gt=0)
    body_read_timeout: float = Field(default=10.0, gt=0)
    """Seconds from the request's head to the body's last byte."""


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def unstorable_number(value: Any, path: list[str | int]) -> tuple[list[str | int], str] | None:
    """Where the first number no store keeps is, and why (None: there is none).

    The parser refuses NaN and Infinity already; ``1e400`` still parses, as ``inf``.
    Its nesting depth is bounded by the parser (a few hundred levels).
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            return path, "a number too large for a 64-bit float"
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -INT_LIMIT <= value < INT_LIMIT:
            return path, "an integer beyond signed 64 bits"
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if found := unstorable_number(item, [*path, index]):
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if found := unstorable_number(item, [*path, key]):
                return found
    return None


class _Refused(Exception):
    def __init__(self, status: int, detail: str, *, close: bool = False) -> None:
        super().__init__(detail)
        self.status, self.detail, self.close = status, detail, close


class _Disconnected(Exception):
    pass


class RequestGuard:
    def __init__(self, app: ASGIApp, limits: RequestLimits | None = None) -> None:
        self.app = app
        self.limits = limits or RequestLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            try:
                receive = await self._admit(scope, receive)
            except _Refused as refused:
                headers = {"Connection": "close"} if refused.close else None
                await problem(refused.status, detail=refused.detail, headers=headers)(
                    scope, receive, tracked
                )
                return
            except _Disconnected:
                return
            except _Invalid as invalid:
                await validation_problem(invalid.errors, invalid.detail)(scope, receive, tracked)
                return
            await self.app(scope, receive, tracked)
        except Exception as error:
            if started:
                raise
            if server := unavailable_server(error):
                log.warning(
                    "%s %s: %s is unavailable: %r", scope["method"], scope["path"], server, error
                )
                await unavailable_problem(server)(scope, receive, tracked)
                return
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            await problem(500, detail="an unexpected error; it is logged")(scope, receive, tracked)

    async def _admit(self, scope: Scope, receive: Receive) -> Receive:
        """The receive the app gets: the body read, checked and handed over whole."""
        headers = Headers(scope=scope)
        length_text = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not chunked:
            if length_text is None:
                return receive
            try:
                length = int(length_text)
            except ValueError:
                raise _Refused(400, "invalid Content-Length", close=True) from None
            if length == 0:
                return receive
            if length > self.limits.max_body_bytes:
                raise _Refused(413, self._too_large(), close=True)
        body = await self._read(receive)
        if not is_json(headers.get("content-type")):
            raise _Refused(
                415,
                "the body must be JSON: send Content-Type: application/json "
                f"(got {headers.get('content-type', 'none')!r})",
            )
        if body:
            _check_json(body)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # the client's disconnect, if it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.limits.body_read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Disconnected
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limits.max_body_bytes:
                        raise _Refused(413, self._too_large(), close=True)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refused(
                408,
                f"the body did not arrive within {self.limits.body_read_timeout:g} s",
                close=True,
            ) from None

    def _too_large(self) -> str:
        return f"the body is larger than {self.limits.max_body_bytes} bytes"


class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]], detail: str) -> None:
        super().__init__(detail)
        self.errors, self.detail = errors, detail


def _check_json(body: bytes) -> None:
    try:
        value = from_json(body, allow_inf_nan=False)
    except ValueError as error:
        raise _Invalid(
            [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {error}"}],
            "the body is not valid JSON (NaN, Infinity and lone surrogates are not JSON)",
        ) from None
    if found := unstorable_number(value, ["body"]):
        where, why = found
        raise _Invalid(
            [{"type": "number_out_of_range", "loc": where, "msg": f"Input is {why}"}],
            f"the body holds {why}",
        )
