"""Bearer tokens and authorization, in every API (the command APIs and the query API).

Nothing behind the gateway trusts the network: each API verifies the token itself
(PyJWT, the issuer's keys from its JWKS, cached) and decides per route and per resource
(docs/auth.md has every route's rule; docs/adr: "every service verifies the token").

- `authenticated` (and the `Caller` annotation): the verified `Principal`, or 401 with
  `WWW-Authenticate: Bearer ...` (RFC 6750) and a problem+json body.
- `requires("customer")`: the principal has one of these roles, or is `ops`; else 403.
- `Principal.authorize(what, customer=..., restaurant=...)`: right after loading a
  resource, the caller owns it in one of those roles (subject == owner id), or is `ops`;
  else 403.

`install_auth(app, open_paths=...)` wires it into an app; `check_every_route_guarded(app)`
(run at start-up) refuses to serve a route that takes no token unless its path is one
of the app's open paths (health, the contracts' pages).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import jwt
from anyio import to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jwt import PyJWK, PyJWKSet

from kernel.problems import ProblemResponse, problem, problem_responses
from kernel.settings import AuthSettings

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
"""Asymmetric only: `none` and HS* are refused whatever the token says (an HS256 token
"signed" with the public key is the classic confusion attack)."""
OPS = "ops"
CUSTOMER = "customer"
RESTAURANT = "restaurant"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud"]
_VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Principal:
    """Who calls: the business id they act as (token subject) and their roles."""

    subject: str
    roles: frozenset[str]

    @property
    def is_ops(self) -> bool:
        return OPS in self.roles

    def has_role(self, *roles: str) -> bool:
        """One of `roles`, or `ops` (which may call every route)."""
        return self.is_ops or any(role in self.roles for role in roles)

    def owns(self, **owners: str | None) -> bool:
        """Holds one of the roles named by the keywords and is that role's owner id."""
        return any(
            role in self.roles and owner is not None and owner == self.subject
            for role, owner in owners.items()
        )

    def authorize(self, what: str, **owners: str | None) -> None:
        """403 unless `ops` or the owner: `authorize("order x", customer=order.customer_id)`."""
        if not (self.is_ops or self.owns(**owners)):
            raise Forbidden(f"{what} is not yours")

    def own_only(self, owner: str | None, what: str) -> str | None:
        """The owner a list is filtered by: for ops, ``owner`` as asked (None: every
        owner's); for anyone else their own id, and a 403 if ``owner`` names another
        (``what`` says whose: "the orders of customer x")."""
        if self.is_ops:
            return owner
        if owner is not None and owner != self.subject:
            raise Forbidden(f"{what} are not yours")
        return self.subject


class AuthError(Exception):
    """Answered as problem+json by the handler `install_auth` adds."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class NotAuthenticated(AuthError):
    status = 401
    title = "Unauthorized"


class Forbidden(AuthError):
    status = 403
    title = "Forbidden"


class InvalidToken(Exception):
    """Why a token was refused (its text goes to the client)."""


def _quoted(text: str) -> str:
    """A quoted-string for a WWW-Authenticate parameter: printable ASCII, no quotes."""
    return re.sub(r"[^ !#-\[\]-~]", "?", text)[:200]


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class KeySet:
    """The issuer's public signing keys by key id, from its JWKS (`https://`, with
    `jwt.PyJWKClient`, or a `file://`), cached.

    Fetched at the first token, again once older than `cache_seconds` (rotation), and
    on an unknown key id at most every `min_refetch_seconds`, so that tokens with made-up
    key ids cannot make the service hammer the issuer. A failed fetch keeps the keys it
    had. Fetching is blocking I/O (urllib): it runs in a worker thread.
    """

    def __init__(
        self,
        url: str,
        cache_seconds: float,
        min_refetch_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self._read: Callable[[], Any]
        if urlsplit(url).scheme == "file":
            # PyJWKClient takes http(s) only (a JWKS URL from a token must not read
            # files); a local file named by the settings is read here.
            path = Path(url2pathname(urlsplit(url).path))
            self._read = lambda: json.loads(path.read_bytes())
        else:
            self._read = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=5).fetch_data
        self._cache_seconds = cache_seconds
        self._min_refetch_seconds = min_refetch_seconds
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt
        self._lock: asyncio.Lock | None = None
        self.generation = 0
        """Changes whenever the keys change (verified tokens are checked again)."""

    async def key(self, kid: str) -> PyJWK:
        key = self._keys.get(kid)
        if key is not None and not self._stale():
            return key
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            key = self._keys.get(kid)
            if (key is None or self._stale()) and self._may_fetch():
                await to_thread.run_sync(self._fetch)
                key = self._keys.get(kid)
        if key is None:
            raise InvalidToken(f"unknown key id {kid!r}")
        return key

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._cache_seconds

    def _may_fetch(self) -> bool:
        return self._tried_at is None or self._clock() - self._tried_at >= self._min_refetch_seconds

    def _fetch(self) -> None:
        self._tried_at = self._clock()
        try:
            jwks = PyJWKSet.from_dict(self._read())
        except (jwt.PyJWTError, ValueError, TypeError, OSError) as error:
            log.warning("could not fetch the signing keys from %s: %s", self.url, error)
            return
        keys = {
            key.key_id: key
            for key in jwks.keys
            if key.key_id
            and key.public_key_use in ("sig", None)
            and key.algorithm_name in ALGORITHMS
        }
        if set(keys) != set(self._keys):
            self.generation += 1
        self._keys = keys
        self._fetched_at = self._tried_at


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    expires: float
    not_before: float
    generation: int


class TokenVerifier:
    """Checks signature, algorithm, exp, nbf, iat, iss and aud; gives the `Principal`.

    A token verified once is remembered (by its whole text, signature included) until
    it expires, so a client sending the same token again costs a dictionary look-up,
    not an RSA verification; its times are still checked on every use.
    """

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.keys = KeySet(
            settings.jwks_url, settings.jwks_cache_seconds, settings.jwks_min_refetch_seconds
        )
        self._clock = clock
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None and known.generation == self.keys.generation:
            now, leeway = self._clock(), self.settings.leeway_seconds
            if known.not_before - leeway <= now < known.expires + leeway:
                self._verified.move_to_end(token)
                return known.principal
        self._verified.pop(token, None)
        claims, generation = await self._decode(token)
        principal = self._principal(claims)
        self._verified[token] = _Verified(
            principal,
            expires=float(claims["exp"]),
            not_before=float(claims.get("nbf", claims["iat"])),
            generation=generation,
        )
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _decode(self, token: str) -> tuple[dict[str, Any], int]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken(f"malformed token: {error}") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(f"algorithm {algorithm!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no key id (kid)")
        key = await self.keys.key(kid)
        generation = self.keys.generation
        if key.algorithm_name != algorithm:
            raise InvalidToken(f"key {kid!r} is not a {algorithm} key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,  # the public key itself: its algorithm is checked above
                algorithms=[algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet") from None
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error) or type(error).__name__) from None
        return claims, generation

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = _claim(claims, self.settings.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise InvalidToken(f"the token has no {self.settings.subject_claim!r} claim")
        roles = _claim(claims, self.settings.roles_claim)
        if not isinstance(roles, list):
            roles = []
        return Principal(subject, frozenset(role for role in roles if isinstance(role, str)))


_bearer = HTTPBearer(
    scheme_name="bearer",
    bearerFormat="JWT",
    description="An access token of the issuer the API trusts (AUTH_ISSUER); locally: "
    "`cqrs token --sub ID --role ROLE`.",
    auto_error=False,
)


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from a valid bearer token; 401 otherwise."""
    verifier: TokenVerifier = request.app.state.token_verifier
    realm = f'Bearer realm="{_quoted(verifier.settings.audience)}"'
    if credentials is None or not credentials.credentials:
        raise NotAuthenticated("a bearer token is required", {"WWW-Authenticate": realm})
    try:
        return await verifier.verify(credentials.credentials)
    except InvalidToken as error:
        challenge = f'{realm}, error="invalid_token", error_description="{_quoted(str(error))}"'
        raise NotAuthenticated(str(error), {"WWW-Authenticate": challenge}) from None


Caller = Annotated[Principal, Depends(authenticated)]
"""Any valid token; the route then checks ownership with `Principal.authorize`."""


def requires(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller has one of `roles` (or `ops`), else 403."""

    async def role_check(principal: Caller) -> Principal:
        if not principal.has_role(*roles):
            raise Forbidden(f"this needs the role {' or '.join(roles)}")
        return principal

    role_check.__name__ = f"requires_{'_or_'.join(roles)}"
    return role_check


def check_every_route_guarded(app: FastAPI) -> None:
    """Refuse to start with a route that takes no token and is not one of the app's
    open paths (`install_auth`): secure by default.

    Checked on the OpenAPI document, which is what clients see: an operation takes the
    token when the bearer scheme is among its security requirements, and it is there
    exactly when one of its dependencies is `authenticated`.
    """
    open_paths: frozenset[str] = app.state.open_paths
    unguarded = [
        f"{method.upper()} {path}"
        for path, operations in app.openapi().get("paths", {}).items()
        if path not in open_paths
        for method, operation in operations.items()
        if isinstance(operation, dict) and not operation.get("security")
    ]
    if unguarded:
        raise RuntimeError(
            "routes without an authorization rule (add Depends(requires(...)) or a Caller "
            f"with an ownership check, or list the path as open): {', '.join(unguarded)}"
        )


def install_auth(
    app: FastAPI, *, open_paths: Collection[str], settings: AuthSettings | None = None
) -> None:
    """Token verification for `app`'s routes, their 401/403 answers and OpenAPI entries.

    `open_paths` take no token (health, documentation); every other route must have a
    rule (`check_every_route_guarded`, run at start-up).
    """
    app.state.token_verifier = TokenVerifier(settings or AuthSettings())
    app.state.open_paths = frozenset(open_paths)

    @app.exception_handler(AuthError)
    async def refused(_: Request, error: AuthError) -> ProblemResponse:
        return problem(error.status, error.title, error.detail, headers=error.headers)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with 401 and 403 on every operation that takes the token
        (in place: idempotent on the document FastAPI caches)."""
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict) and operation.get("security"):
                    responses = operation.setdefault("responses", {})
                    for status, entry in problem_responses(401, 403).items():
                        responses.setdefault(str(status), entry)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


OpsOnly = Annotated[Principal, Depends(requires(OPS))]
"""Admin routes."""
CustomerOrOps = Annotated[Principal, Depends(requires(CUSTOMER))]
"""A customer's routes (then `authorize(..., customer=owner)`), and ops."""
RestaurantOrOps = Annotated[Principal, Depends(requires(RESTAURANT))]
"""A restaurant's routes (then `authorize(..., restaurant=owner)`), and ops."""
CustomerOrRestaurantOrOps = Annotated[Principal, Depends(requires(CUSTOMER, RESTAURANT))]
"""What both parties of an order may read (then `authorize` with both owners)."""
