"""Forged and broken bearer tokens: what every API and the gateway must refuse with a 401.

`attack_token(name, auth_dir)` makes the token of one attack against the keys in
`auth_dir` (`devstack.identity`'s files); `ATTACKS` names them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devstack.identity import KEY_FILE, public_jwk


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signing_key(auth_keys: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((auth_keys / KEY_FILE).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "cqrs-local",
        "aud": "cqrs-api",
        "sub": "ops-1",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "realm_access": {"roles": ["ops"]},
    }
    claims.update(changes)
    return claims


def _hs256_with_public_key(auth_keys: Path) -> str:
    """HS256 "signed" with the RSA public key's bytes, as a confused verifier would check it."""
    key = _signing_key(auth_keys)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": public_jwk(key)["kid"]}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims()).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def attack_token(name: str, auth_keys: Path) -> str | None:
    """The token of attack `name` (``None``: no token at all)."""
    key = _signing_key(auth_keys)
    kid = public_jwk(key)["kid"]

    def signed(claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, **headers})

    now = int(time.time())
    if name == "no token":
        return None
    if name == "alg none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        return f"{header}.{_b64(json.dumps(_claims()).encode())}."
    if name == "expired":
        return signed(_claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600))
    if name == "not yet valid":
        return signed(_claims(nbf=now + 3600, exp=now + 7200))
    if name == "issued in the future":
        return signed(_claims(iat=now + 3600, nbf=now, exp=now + 7200))
    if name == "wrong issuer":
        return signed(_claims(iss="someone-else"))
    if name == "wrong audience":
        return signed(_claims(aud="another-api"))
    if name == "no expiry":
        claims = _claims()
        del claims["exp"]
        return signed(claims)
    if name == "tampered signature":
        header, _, signature = signed(_claims(sub="cust-a")).split(".")
        forged = _b64(json.dumps(_claims()).encode())  # ops instead of a customer
        return f"{header}.{forged}.{signature}"
    if name == "unknown kid":
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(_claims(), stranger, algorithm="RS256", headers={"kid": "unknown-kid"})
    if name == "another key with the trusted kid":
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(_claims(), stranger, algorithm="RS256", headers={"kid": kid})
    if name == "ES256 with the trusted kid":
        stranger_ec = ec.generate_private_key(ec.SECP256R1())
        return jwt.encode(_claims(), stranger_ec, algorithm="ES256", headers={"kid": kid})
    if name == "HS256 signed with the RSA public key":
        return _hs256_with_public_key(auth_keys)
    if name == "not a JWT":
        return "not-a-jwt"
    raise AssertionError(name)


ATTACKS = [
    "no token",
    "alg none",
    "expired",
    "not yet valid",
    "issued in the future",
    "wrong issuer",
    "wrong audience",
    "no expiry",
    "tampered signature",
    "unknown kid",
    "another key with the trusted kid",
    "ES256 with the trusted kid",
    "HS256 signed with the RSA public key",
    "not a JWT",
]
