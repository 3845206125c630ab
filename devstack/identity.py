"""The local identity: a signing key pair under `var/auth/`, its JWKS, and tokens.

`cqrs run` makes the keys at its first run (`ensure_keys`) and points every API at the
JWKS (`AUTH_JWKS_URL=file://.../jwks.json`); `cqrs token --sub ID --role ROLE` mints a
token the APIs accept (`mint_token`). In compose, Keycloak issues the tokens instead
(docs/auth.md). The private key never leaves `var/auth/` (mode 0600, ignored by git).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.servers import REPO_ROOT
from kernel.settings import AuthSettings

KEY_FILE = "signing-key.pem"
JWKS_FILE = "jwks.json"
ALGORITHM = "RS256"


def default_auth_dir() -> Path:
    """`$DEVSTACK_VAR_DIR/auth` (set by `cqrs run` for its processes) or `<repo>/var/auth`."""
    return Path(os.environ.get("DEVSTACK_VAR_DIR") or REPO_ROOT / "var") / "auth"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The public half as a JWK, its kid the RFC 7638 thumbprint."""
    numbers = key.public_key().public_numbers()
    members = {"e": _uint(numbers.e), "kty": "RSA", "n": _uint(numbers.n)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())
    return {**members, "use": "sig", "alg": ALGORITHM, "kid": kid}


def _write_private(path: Path, data: bytes) -> None:
    """Written under another name with mode 0600 from the start, then renamed."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(partial, path)


def _load_key(auth_dir: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((auth_dir / KEY_FILE).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{auth_dir / KEY_FILE} is not an RSA private key")
    return key


def ensure_keys(auth_dir: Path) -> None:
    """Create `signing-key.pem` (RSA 2048, mode 0600) and `jwks.json` if missing.

    The JWKS is written again whenever it does not match the key, so it always
    publishes the key tokens are signed with.
    """
    auth_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # the private key lives here
    key_path = auth_dir / KEY_FILE
    if not key_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(key_path, pem)
    jwks = json.dumps({"keys": [public_jwk(_load_key(auth_dir))]}, indent=2) + "\n"
    jwks_path = auth_dir / JWKS_FILE
    if not jwks_path.exists() or jwks_path.read_text() != jwks:
        partial = jwks_path.with_name(f".{JWKS_FILE}.{os.getpid()}")
        partial.write_text(jwks)
        os.replace(partial, jwks_path)


def jwks_url(auth_dir: Path) -> str:
    """`file://` URL of the JWKS (what `AUTH_JWKS_URL` is set to locally)."""
    return (auth_dir.resolve() / JWKS_FILE).as_uri()


def _place(claims: dict[str, Any], path: str, value: Any) -> None:
    """Set `value` at a dotted claim path (`realm_access.roles`)."""
    *parents, last = path.split(".")
    for part in parents:
        claims = claims.setdefault(part, {})
    claims[last] = value


def mint_token(
    subject: str, roles: Sequence[str], ttl_seconds: int = 3600, *, auth_dir: Path
) -> str:
    """A token the APIs accept: issuer and audience from `AuthSettings`, the roles at
    `AUTH_ROLES_CLAIM`'s path, the subject as `sub` (and at `AUTH_SUBJECT_CLAIM`)."""
    ensure_keys(auth_dir)
    settings = AuthSettings()
    key = _load_key(auth_dir)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": str(uuid.uuid4()),
    }
    _place(claims, settings.subject_claim, subject)
    _place(claims, settings.roles_claim, list(roles))
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": public_jwk(key)["kid"]})


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `token` to the `cqrs` command line."""
    parser = subparsers.add_parser(
        "token", help="print a bearer token for the local stack (cqrs token --sub ID --role ROLE)"
    )
    parser.add_argument("--sub", required=True, help="who: a customer or restaurant id, or any")
    parser.add_argument(
        "--role",
        action="append",
        default=[],
        choices=["customer", "restaurant", "ops"],
        help="a role (repeat for several)",
    )
    parser.add_argument("--ttl", type=int, default=3600, help="seconds it is valid (3600)")
    parser.add_argument(
        "--auth-dir", type=Path, help="the keys; default: $DEVSTACK_VAR_DIR/auth or var/auth"
    )
    parser.set_defaults(handler=_token_command)


def _token_command(args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        print("error: --ttl must be positive")
        return 2
    auth_dir = args.auth_dir or default_auth_dir()
    print(mint_token(args.sub, args.role, args.ttl, auth_dir=auth_dir))
    return 0
