"""Helpers for tests: poll with a deadline instead of sleeping a fixed time; tokens."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from devstack.identity import mint_token

T = TypeVar("T")

AUTH_DIR: Path | None = None
"""The session's signing keys (set by the `auth_keys` fixture of tests/conftest.py)."""


def bearer(subject: str = "ops-1", *roles: str) -> dict[str, str]:
    """An `Authorization` header the APIs the tests start accept: `roles` (default
    `ops`, which may call every route) for `subject`."""
    return {"Authorization": f"Bearer {token(subject, *(roles or ('ops',)))}"}


@cache
def token(subject: str, *roles: str) -> str:
    """A token of the session's keys (one per subject and roles: signing costs a few ms)."""
    if AUTH_DIR is None:
        raise RuntimeError("no session keys yet: call bearer() inside a test or a fixture")
    return mint_token(subject, roles, 24 * 3600, auth_dir=AUTH_DIR)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    message: str = "",
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Call `predicate` until it returns a truthy value, and return that value.

    Raises `TimeoutError` (with `message`) once `timeout` seconds have passed. Exceptions
    of the types in `ignore` count as "not yet"; any other exception propagates.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(_timeout_text(message, timeout, last_error)) from last_error
        time.sleep(min(interval, remaining))


async def wait_for_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    message: str = "",
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """`wait_for` for async tests: `predicate` may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
            value: T = await result if inspect.isawaitable(result) else result
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(_timeout_text(message, timeout, last_error)) from last_error
        await asyncio.sleep(min(interval, remaining))


def _timeout_text(message: str, timeout: float, last_error: Exception | None) -> str:
    text = f"{message or 'condition not met'} within {timeout:g} s"
    return f"{text} (last error: {last_error!r})" if last_error else text


def assert_unavailable(response: httpx.Response, bound: float) -> None:
    """A 503 problem with Retry-After, answered within ``bound`` seconds."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == 503, f"{where}: {response.status_code} {response.text}"
    assert response.headers["retry-after"].isdigit(), where
    assert response.headers["content-type"] == "application/problem+json", where
    assert response.json()["status"] == 503, where
    assert response.elapsed.total_seconds() < bound, f"{where} took {response.elapsed}"


def wait_routable(admin_url: str, hosts: int, timeout: float = 30.0) -> None:
    """Until the Envoy gateway whose admin interface is ``admin_url`` has seen ``hosts``
    processes ready: it sends requests only to those (its active health checks)."""

    def healthy() -> int:
        clusters = httpx.get(f"{admin_url}/clusters", timeout=5).text
        return clusters.count("::health_flags::healthy\n")

    wait_for(lambda: healthy() >= hosts, timeout=timeout, message="not every API is ready")


def debian_tool(command: str, package: str) -> str:
    """The path of ``command``; where it is not installed, the test fails under CI (which
    installs ``package``) and is skipped elsewhere."""
    path = shutil.which(command)
    if path is None:
        reason = f"{command} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path
