"""The local identity provider: a signing key pair under var/auth and tokens signed with it.

A minimal stand-in so the gateway works on its own branch; the auth work provides the
full version (same signatures). Locally there is no OIDC server: the key pair made at
the first run is the issuer, its JWKS is what the gateway and the services verify with.
"""

from __future__ import annotations

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
from jwt.algorithms import RSAAlgorithm

from devstack.servers import REPO_ROOT

SIGNING_KEY = "signing-key.pem"
JWKS = "jwks.json"
DEFAULT_ISSUER = "cqrs-local"
DEFAULT_AUDIENCE = "cqrs-api"


def default_auth_dir() -> Path:
    """`$DEVSTACK_VAR_DIR/auth` (set by `cqrs run` for its processes) or `<repo>/var/auth`."""
    return Path(os.environ.get("DEVSTACK_VAR_DIR") or REPO_ROOT / "var") / "auth"


def issuer() -> str:
    """`AUTH_ISSUER` (default `cqrs-local`)."""
    return os.environ.get("AUTH_ISSUER") or DEFAULT_ISSUER


def audience() -> str:
    """`AUTH_AUDIENCE` (default `cqrs-api`)."""
    return os.environ.get("AUTH_AUDIENCE") or DEFAULT_AUDIENCE


def key_id(public_jwk: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint-like id of a public key: stable for the same key."""
    canonical = json.dumps(
        {name: public_jwk[name] for name in ("e", "kty", "n")}, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def ensure_keys(auth_dir: Path) -> None:
    """Write `<auth_dir>/signing-key.pem` (RSA 2048) and `<auth_dir>/jwks.json` if missing."""
    auth_dir.mkdir(parents=True, exist_ok=True)
    key_path = auth_dir / SIGNING_KEY
    if not key_path.is_file():
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        temporary = key_path.with_suffix(".tmp")
        temporary.write_bytes(pem)
        temporary.chmod(0o600)
        temporary.replace(key_path)
        (auth_dir / JWKS).unlink(missing_ok=True)
    jwks_path = auth_dir / JWKS
    if not jwks_path.is_file():
        private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(private_key, rsa.RSAPrivateKey)
        public_jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        public_jwk |= {"kid": key_id(public_jwk), "use": "sig", "alg": "RS256"}
        temporary = jwks_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"keys": [public_jwk]}, indent=2))
        temporary.replace(jwks_path)


def mint_token(
    subject: str, roles: Sequence[str], ttl_seconds: int = 3600, *, auth_dir: Path
) -> str:
    """An RS256 token for `subject` with `roles` at `realm_access.roles` (as Keycloak puts them)."""
    ensure_keys(auth_dir)
    jwks = json.loads((auth_dir / JWKS).read_text())
    now = int(time.time())
    claims = {
        "iss": issuer(),
        "aud": audience(),
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": str(uuid.uuid4()),
        "realm_access": {"roles": list(roles)},
    }
    return jwt.encode(
        claims,
        (auth_dir / SIGNING_KEY).read_bytes(),
        algorithm="RS256",
        headers={"kid": jwks["keys"][0]["kid"]},
    )
