"""The token verifier and the key cache, without a server (the APIs: test_auth.py)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from devstack import cli
from devstack.identity import JWKS_FILE, KEY_FILE, ensure_keys, jwks_url, mint_token
from kernel.auth import (
    Forbidden,
    InvalidToken,
    KeySet,
    OpsOnly,
    Principal,
    TokenVerifier,
    check_every_route_guarded,
    install_auth,
)
from kernel.settings import AuthSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting(keys: KeySet) -> list[int]:
    """Counts the JWKS fetches of `keys`."""
    fetches: list[int] = []
    read = keys._read

    def counted() -> Any:
        fetches.append(1)
        return read()

    keys._read = counted
    return fetches


@pytest.fixture
def auth_dir(tmp_path: Path) -> Path:
    ensure_keys(tmp_path / "auth")
    return tmp_path / "auth"


def test_keys_are_made_once_private_and_published_with_their_thumbprint(auth_dir: Path) -> None:
    key, jwks = (auth_dir / KEY_FILE), (auth_dir / JWKS_FILE)
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes(), jwks.read_text()
    ensure_keys(auth_dir)
    assert (key.read_bytes(), jwks.read_text()) == before
    assert '"kid"' in before[1] and "PRIVATE" not in before[1]


async def test_a_minted_token_gives_its_principal_and_is_verified_once(auth_dir: Path) -> None:
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks_url(auth_dir)))
    fetches = counting(verifier.keys)
    token = mint_token("cust-1", ["customer"], auth_dir=auth_dir)

    for _ in range(3):
        assert await verifier.verify(token) == Principal("cust-1", frozenset({"customer"}))
    assert len(fetches) == 1


async def test_the_subject_and_roles_claims_are_settings(
    auth_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_SUBJECT_CLAIM", "preferred_username")
    monkeypatch.setenv("AUTH_ROLES_CLAIM", "resource_access.cqrs.roles")
    token = mint_token("rest-1", ["restaurant"], auth_dir=auth_dir)
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks_url(auth_dir)))
    assert await verifier.verify(token) == Principal("rest-1", frozenset({"restaurant"}))


async def test_an_unknown_kid_fetches_the_keys_again_at_most_every_min_refetch_seconds(
    auth_dir: Path, tmp_path: Path
) -> None:
    clock = Clock()
    keys = KeySet(jwks_url(auth_dir), cache_seconds=300, min_refetch_seconds=10, clock=clock)
    fetches = counting(keys)
    other = tmp_path / "other"
    ensure_keys(other)
    rotated = mint_token("ops-1", ["ops"], auth_dir=other)
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks_url(auth_dir)))
    verifier.keys = keys

    for _ in range(5):  # made-up key ids do not hammer the issuer
        with pytest.raises(InvalidToken, match="unknown key id"):
            await verifier.verify(rotated)
    assert len(fetches) == 1

    # The issuer rotates to the other key: found once the interval has passed.
    shutil.copy(other / JWKS_FILE, auth_dir / JWKS_FILE)
    with pytest.raises(InvalidToken, match="unknown key id"):
        await verifier.verify(rotated)
    clock.now += 10
    assert (await verifier.verify(rotated)).subject == "ops-1"
    assert len(fetches) == 2


async def test_keys_are_fetched_again_once_stale_and_kept_when_the_issuer_is_away(
    auth_dir: Path,
) -> None:
    clock = Clock()
    keys = KeySet(jwks_url(auth_dir), cache_seconds=300, min_refetch_seconds=10, clock=clock)
    fetches = counting(keys)
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks_url(auth_dir)))
    verifier.keys = keys
    token = mint_token("ops-1", ["ops"], auth_dir=auth_dir)
    await verifier.verify(token)
    clock.now += 300
    (auth_dir / JWKS_FILE).unlink()  # the issuer cannot be reached
    assert (await verifier.verify(mint_token("ops-2", ["ops"], auth_dir=auth_dir))).subject
    assert len(fetches) == 2


def test_authorize_passes_ops_and_owners_only() -> None:
    ops = Principal("ops-1", frozenset({"ops"}))
    customer = Principal("cust-1", frozenset({"customer"}))
    restaurant = Principal("rest-1", frozenset({"restaurant"}))
    ops.authorize("order", customer="cust-2", restaurant="rest-2")
    customer.authorize("order", customer="cust-1", restaurant="rest-1")
    restaurant.authorize("order", customer="cust-1", restaurant="rest-1")
    for principal, owners in [
        (customer, {"customer": "cust-2"}),
        (customer, {"restaurant": "cust-1"}),  # the right id in another role
        (restaurant, {"customer": "rest-1"}),
        (customer, {"customer": None}),
    ]:
        with pytest.raises(Forbidden):
            principal.authorize("order", **owners)
    assert customer.has_role("customer") and not customer.has_role("restaurant")
    assert ops.has_role("restaurant")


def test_an_app_with_a_route_that_takes_no_token_does_not_start(auth_dir: Path) -> None:
    settings = AuthSettings(jwks_url=jwks_url(auth_dir))
    app = FastAPI()
    install_auth(app, open_paths={"/health"}, settings=settings)

    @app.get("/health")
    async def health() -> None: ...

    @app.get("/mine")
    async def mine(caller: OpsOnly) -> None: ...

    check_every_route_guarded(app)

    @app.get("/forgotten")
    async def forgotten() -> None: ...

    with pytest.raises(RuntimeError, match="GET /forgotten"):
        check_every_route_guarded(app)


def test_cqrs_token_prints_a_token_the_apis_accept(auth_dir: Path, capsys) -> None:
    code = cli.main(
        ["token", "--sub", "rest-1", "--role", "restaurant", "--auth-dir", str(auth_dir)]
    )
    assert code == 0
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks_url(auth_dir)))
    assert asyncio.run(verifier.verify(token)) == Principal("rest-1", frozenset({"restaurant"}))


async def test_keys_are_fetched_over_http_too(auth_dir: Path) -> None:
    """An issuer's JWKS URL (`https://...` in production) goes through `jwt.PyJWKClient`."""
    jwks = (auth_dir / JWKS_FILE).read_bytes()

    class JWKS(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: Any) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), JWKS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/certs"
        verifier = TokenVerifier(AuthSettings(jwks_url=url))
        token = mint_token("ops-1", ["ops"], auth_dir=auth_dir)
        assert (await verifier.verify(token)).subject == "ops-1"
    finally:
        server.shutdown()
        server.server_close()
