"""The committed Keycloak realm fits what compose tells the APIs (docs/auth.md)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from devstack.servers import REPO_ROOT

REALM = json.loads((REPO_ROOT / "devstack" / "keycloak" / "cqrs-realm.json").read_text())
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def auth_environment() -> dict[str, Any]:
    return dict(COMPOSE["x-auth"])


def test_the_apis_trust_the_realm_s_issuer_and_keys() -> None:
    env = auth_environment()
    realm = REALM["realm"]
    assert env["AUTH_ISSUER"].endswith(f"/realms/{realm}")
    assert env["AUTH_JWKS_URL"].endswith(f"/realms/{realm}/protocol/openid-connect/certs")
    assert env["AUTH_SUBJECT_CLAIM"] == "preferred_username"
    assert env["AUTH_ROLES_CLAIM"] == "realm_access.roles"  # where realm roles go


def test_the_roles_clients_and_audience() -> None:
    assert {role["name"] for role in REALM["roles"]["realm"]} == {"customer", "restaurant", "ops"}
    clients = {client["clientId"]: client for client in REALM["clients"]}
    audience = auth_environment()["AUTH_AUDIENCE"]
    assert audience in clients
    for name in ("cqrs-cli", "cqrs-demo"):  # the clients that get tokens put the audience in
        mappers = clients[name]["protocolMappers"]
        assert any(
            m["protocolMapper"] == "oidc-audience-mapper"
            and m["config"]["included.client.audience"] == audience
            and m["config"]["access.token.claim"] == "true"
            for m in mappers
        ), name


def test_a_user_per_role_named_by_business_id_and_no_secret_committed() -> None:
    users = {user["username"]: user for user in REALM["users"]}
    assert users["cust-ok"]["realmRoles"] == ["customer"]
    assert users["rest-pizza"]["realmRoles"] == ["restaurant"]
    assert users["ops-admin"]["realmRoles"] == ["ops"]
    assert users["service-account-cqrs-demo"]["realmRoles"] == ["ops"]
    for user in users.values():
        for credential in user.get("credentials", []):
            assert credential["value"].startswith("${"), user["username"]
    for client in REALM["clients"]:
        assert client.get("secret", "${").startswith("${"), client["clientId"]
