"""Idempotent commands: the ``Idempotency-Key`` request header (IETF httpapi draft).

A client that retries a ``POST`` with the same key gets the first answer again, and the
command has its effect once: also when the copies arrive at once, at different processes
of the API. How (docs/adr/0025-idempotency-keys-in-the-event-store.md):

- The key (scoped by the caller) and a fingerprint of the request are recorded in the
  service's store **in the same transaction as the command's events** (group commit:
  ``kernel.group_commit.claiming``). The store refuses a key it holds: a copy
  that got that far changes nothing (``IdempotencyConflict``).
- Once the command is committed, its answer is kept with the key. A copy answers it:
  at once if it is there, else once it is there (the first is still answering), waiting
  at most ``IDEMPOTENCY_WAIT`` seconds.
- The same key with another request (method, path or body) is a 422.
- An answer that was never kept (the process stopped between the commit and keeping
  it): once ``IDEMPOTENCY_ANSWER_LOST_AFTER`` seconds have passed since the commit, a
  copy gets a final 409 "Answer lost" naming what the command saved (aggregate ids and
  versions), not "in progress" until the key expires.
- Keys expire after ``IDEMPOTENCY_KEY_TTL`` seconds; a command that failed records no
  key (it changed nothing, so running it again is safe).
"""

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from queue import SimpleQueue
from typing import Any

from pydantic_settings import BaseSettings
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel.group_commit import claiming
from kernel.problems import PROBLEM_MEDIA_TYPE, ProblemResponse, problem
from kernel.store import IdempotencyClaim, IdempotencyRecord, SchemaProcessRecorder
from kernel.tracing import outside_traces

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
_POLL_INTERVAL = 0.02


class IdempotencySettings(BaseSettings):
    idempotency_key_ttl: float = 24 * 3600
    """Seconds a key is kept: a retry within that time gets the first answer."""
    idempotency_wait: float = 5.0
    """Seconds a copy waits for the first request's answer before a 409."""
    idempotency_answer_lost_after: float = 60.0
    """Seconds after the command's commit from which a key still without its answer is
    taken as having lost it (kept within milliseconds by a process that goes on)."""


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and all(33 <= ord(c) <= 126 for c in key)


def fingerprint(scope: Scope, body: bytes) -> str:
    request = hashlib.sha256()
    for part in (scope["method"].encode(), scope.get("raw_path") or b"", scope["query_string"]):
        request.update(part + b"\0")
    request.update(body)
    return request.hexdigest()


def stored_key(caller: str, key: str) -> str:
    """The key as stored: one caller's key never answers another caller's request."""
    return hashlib.sha256(f"{caller}\0{key}".encode()).hexdigest()


class IdempotencyMiddleware:
    """Pure ASGI middleware: gives each ``POST`` with an ``Idempotency-Key`` its claim.

    ``recorder(app)`` is the service's store; ``caller(app, headers)`` says who asks (the
    verified subject of the request's token; ``None`` if it cannot be told, and then the
    request goes on without a claim: it is refused further in).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        recorder: Callable[[Starlette], SchemaProcessRecorder],
        caller: Callable[[Starlette, Headers], Awaitable[str | None]],
        settings: IdempotencySettings | None = None,
    ):
        self.app = app
        self.recorder = recorder
        self.caller = caller
        self.settings = settings or IdempotencySettings()
        self._answers: AnswerKeeper | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._keeping_answers_until_shutdown(receive), send)
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get(HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        if not valid_key(key):
            detail = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
            await problem(400, "Invalid Idempotency-Key", detail)(scope, receive, send)
            return
        caller = await self.caller(scope["app"], headers)
        if caller is None:
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        if more is not None:  # the client went away
            return
        key = stored_key(caller, key)
        request_fingerprint = fingerprint(scope, body)
        recorder = self.recorder(scope["app"])
        # The request runs at once: its command's transaction is what tells a first
        # request from a copy (a copy is refused there, having changed nothing).
        expires_at = time.time() + self.settings.idempotency_key_ttl
        request = claiming(IdempotencyClaim(key, request_fingerprint, expires_at))
        answer = _Answer()
        await self.app(scope, _replay(body, receive), answer.capture)
        if request.recorded:
            self._keeper(recorder).keep(key, answer.status, answer.content_type, answer.body)
            await answer.send(send)
            return
        found = None
        if not request.refused:
            # It stored nothing: a new request that failed, or a copy of one that
            # succeeded and that failed as a second try (a cancel of a cancelled order).
            found = await run_in_threadpool(recorder.find_idempotency_key, key)
            if found is None:
                await answer.send(send)
                return
        await self._answer_as_first(recorder, key, request_fingerprint, found, scope, send)

    def _keeper(self, recorder: SchemaProcessRecorder) -> "AnswerKeeper":
        if self._answers is None or self._answers.recorder is not recorder:
            self._answers = AnswerKeeper(recorder)
        return self._answers

    async def _answer_as_first(
        self,
        recorder: SchemaProcessRecorder,
        key: str,
        request_fingerprint: str,
        found: IdempotencyRecord | None,
        scope: Scope,
        send: Send,
    ) -> None:
        deadline = time.monotonic() + self.settings.idempotency_wait
        while found is None or found.status is None:
            if found is not None and found.fingerprint != request_fingerprint:
                break
            if found is not None and self._answer_lost(found):
                await _answer_lost(found)(scope, _no_body, send)
                return
            if time.monotonic() >= deadline:
                detail = (
                    f"a request with this {HEADER} was accepted and has not answered yet; "
                    "retry later (it has its effect once)"
                )
                response = problem(409, "Request in progress", detail, headers={"Retry-After": "1"})
                await response(scope, _no_body, send)
                return
            await asyncio.sleep(_POLL_INTERVAL)
            found = await run_in_threadpool(recorder.find_idempotency_key, key)
        if found.fingerprint != request_fingerprint:
            detail = f"this {HEADER} was used with another request; use a new key"
            await problem(422, "Idempotency-Key reused", detail)(scope, _no_body, send)
            return
        assert found.status is not None and found.body is not None
        await send(
            {
                "type": "http.response.start",
                "status": found.status,
                "headers": [
                    (b"content-type", (found.content_type or "application/json").encode()),
                    (b"content-length", str(len(found.body)).encode()),
                    (REPLAYED_HEADER.lower().encode(), b"true"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": found.body})

    def _answer_lost(self, found: IdempotencyRecord) -> bool:
        """Committed long ago and still without its answer: its process stopped before
        keeping it (killed, or the store failed then). Rows from before ``claimed_at``
        was recorded are never taken as lost."""
        if found.claimed_at is None:
            return False
        return time.time() - found.claimed_at > self.settings.idempotency_answer_lost_after

    def _keeping_answers_until_shutdown(self, receive: Receive) -> Receive:
        """At shutdown, the answers not kept yet are written before the app closes."""

        async def received() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self._answers is not None:
                await run_in_threadpool(self._answers.close)
            return message

        return received


class AnswerKeeper:
    """Writes the answers of recorded keys in a thread of its own, many per transaction.

    The request does not wait for it: a copy that comes before its answer is kept
    waits for it (``IDEMPOTENCY_WAIT``). A write the store refuses (away, or a SQLite
    file locked longer than ``EVENT_STORE_TIMEOUT``) is tried again for ``retry_for``
    seconds; after that those answers are lost, and their copies are told so.
    """

    def __init__(self, recorder: SchemaProcessRecorder, retry_for: float = 30.0):
        self.recorder = recorder
        self.retry_for = retry_for
        self._queue: SimpleQueue[tuple[str, int, str, bytes] | None] = SimpleQueue()
        self._thread = threading.Thread(
            target=outside_traces(self._write), name="answer-keeper", daemon=True
        )
        self._thread.start()

    def keep(self, key: str, status: int, content_type: str, body: bytes) -> None:
        self._queue.put((key, status, content_type, body))

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _write(self) -> None:
        while True:
            answers = [self._queue.get()]
            while not self._queue.empty():
                answers.append(self._queue.get())
            stop = None in answers
            kept = [answer for answer in answers if answer is not None]
            if kept:
                self._record(kept, retry_for=min(self.retry_for, 5.0) if stop else self.retry_for)
            if stop:
                return

    def _record(self, answers: list[tuple[str, int, str, bytes]], retry_for: float) -> None:
        deadline, pause = time.monotonic() + retry_for, 0.05
        while True:
            try:
                self.recorder.record_answers(answers)
                return
            except Exception:
                if time.monotonic() + pause > deadline:
                    log.exception(
                        "could not keep %d answers of idempotent requests; their copies "
                        "will be told the answer was lost",
                        len(answers),
                    )
                    return
                log.warning("could not keep %d answers yet; trying again", len(answers))
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


class _Answer:
    """The route's answer, held until its key has it too."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.status = 500
        self.content_type = "application/json"
        self.body = b""

    async def capture(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.content_type = Headers(raw=message.get("headers", [])).get(
                "content-type", self.content_type
            )
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def send(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


def _answer_lost(found: IdempotencyRecord) -> ProblemResponse:
    """Final (no Retry-After): the effect is stored once, the answer cannot be sent."""
    detail = (
        f"the request with this {HEADER} was carried out, once, but its answer was not kept "
        "(the service stopped first), so it cannot be sent again; `saved` names what it "
        "saved: read those resources for the outcome"
    )
    saved = [{"id": aggregate_id, "version": version} for aggregate_id, version in found.saved]
    return problem(409, "Answer lost", detail, saved=saved)


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole request body; or the disconnect message if the client went away."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then what the client sends."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the ``Idempotency-Key`` header to every POST operation of an OpenAPI document."""
    parameter = {
        "name": HEADER,
        "in": "header",
        "required": False,
        "description": "Send the same key when retrying: the command has its effect once "
        "and the first answer comes back (with `Idempotent-Replayed: true`). Another "
        "request with the same key gets 422. Kept for IDEMPOTENCY_KEY_TTL seconds.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_LENGTH,
            "pattern": "^[!-~]+$",
        },
    }
    invalid_key = {
        "description": f"The {HEADER} header is not 1 to {MAX_KEY_LENGTH} visible ASCII "
        "characters; nothing was changed.",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for operations in openapi.get("paths", {}).values():
        post = operations.get("post")
        if post is not None:
            post.setdefault("parameters", []).append(parameter)
            post.setdefault("responses", {}).setdefault("400", invalid_key)
    return openapi
