"""The benchmarks' HTTP client: aiohttp's session, not httpx's AsyncClient (ADR 16).

Under load the client must cost far less than the server it measures. httpx's
AsyncClient spends several times aiohttp's CPU per request, and once requests queue in
its pool it slows down further (encode/httpx#3215): offered 200 orders/s, the bench
process itself fell behind and the orders API looked saturated at 90-140/s while it
answered 200/s in ~10 ms with aiohttp. The tests keep httpx, where no load is made.
"""

import os
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import failed
from devstack.identity import ensure_keys, jwks_url, mint_token

_auth_dir: Path | None = None


def use_local_identity(auth_dir: Path) -> None:
    """Signing keys for this bench run: the processes it starts trust them (they inherit
    `AUTH_JWKS_URL` from this process's environment) and its clients send an `ops` token
    (ops may call every route). Only for the bench's own process: a test would lose its
    session's keys."""
    global _auth_dir
    ensure_keys(auth_dir)
    os.environ["AUTH_JWKS_URL"] = jwks_url(auth_dir)
    _auth_dir = auth_dir
    authorization.cache_clear()


@cache
def authorization() -> dict[str, str]:
    """The `Authorization` header of the bench's clients (none before `use_local_identity`)."""
    if _auth_dir is None:
        return {}
    return {
        "Authorization": f"Bearer {mint_token('bench', ['ops'], 24 * 3600, auth_dir=_auth_dir)}"
    }


KEEPALIVE_SECONDS = 4.0
"""How long an idle connection is kept: below uvicorn's keep-alive (5 s), as the
gateway's upstream idle timeout is, so that no request is sent on a connection the API
is closing (aiohttp does not retry a POST). With aiohttp's default (15 s), one order in
about a thousand was not accepted in the saga's capacity searches, every one in a step
that followed a pause of a few seconds (the bisected steps), and each failed its step.
"""


def client(base_url: str, connections: int) -> aiohttp.ClientSession:
    """A session with up to `connections` keep-alive connections to `base_url`."""
    return aiohttp.ClientSession(
        base_url,
        connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=KEEPALIVE_SECONDS),
        timeout=aiohttp.ClientTimeout(total=60),
        headers=authorization(),
    )


async def post_json(
    http: aiohttp.ClientSession, path: str, body: dict[str, Any], expect: int
) -> dict[str, Any] | None:
    """POST `body` with a new `Idempotency-Key`, as a client that retries would send it
    (ADR 25); the answer's JSON when the status is `expect`, else None (the reason counted
    by `bench.load.failed`)."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    async with http.post(path, json=body, headers=headers) as response:
        if response.status != expect:
            text = await response.text()
            failed(f"POST {path} answered {response.status}: {text[:150]}")
            return None
        answer: dict[str, Any] = await response.json()
        return answer


async def get_json(
    http: aiohttp.ClientSession, path: str, params: dict[str, Any] | None = None
) -> Any:
    """GET `path`; the answer's JSON when the status is 200, else None."""
    async with http.get(path, params=params) as response:
        if response.status != 200:
            await response.read()
            return None
        return await response.json()
