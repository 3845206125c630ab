"""The gateway's generated configuration: routing rules, retries, scale-out (no server)."""

from __future__ import annotations

import re

from devstack.gateway import (
    Api,
    GatewaySettings,
    Route,
    envoy_config,
    path_regex,
    procfile_apis,
    root_routes,
)
from devstack.run import scale_out

GET, POST = frozenset({"GET"}), frozenset({"POST"})
APIS = [
    Api(
        "orders-api",
        [("127.0.0.1", 8000)],
        [
            Route(POST, "/orders"),
            Route(GET, "/orders/{order_id}"),
            Route(POST, "/orders/{order_id}/cancel"),
            Route(GET, "/health"),
            Route(GET, "/shared"),
        ],
    ),
    Api(
        "kitchen-api",
        [("127.0.0.1", 8003)],
        [Route(GET, "/tickets/{order_id}"), Route(GET, "/health"), Route(GET, "/shared")],
    ),
    Api(
        "query-api",
        [("127.0.0.1", 8001)],
        [Route(GET, "/orders/{order_id}"), Route(GET, "/tickets/{order_id}")],
    ),
]
SETTINGS = GatewaySettings(jwks_url="file:///tmp/jwks.json")


def test_reads_the_query_api_serves_go_to_it_and_the_rest_to_the_one_owner() -> None:
    routes, left_out = root_routes(APIS)
    owner = {(method, r.path): r.api for r in routes for method in r.methods}
    assert owner[("GET", "/orders/{order_id}")] == "query-api"
    assert owner[("GET", "/tickets/{order_id}")] == "query-api"
    assert owner[("POST", "/orders")] == "orders-api"
    assert owner[("POST", "/orders/{order_id}/cancel")] == "orders-api"
    assert ("GET", "/health") not in owner  # every API's own: under its prefix only
    assert left_out == ["GET /shared (kitchen-api, orders-api)"]


def test_path_templates_match_one_segment() -> None:
    regex = path_regex("/orders/{order_id}/cancel")
    assert re.fullmatch(regex, "/orders/abc-1/cancel")
    assert not re.fullmatch(regex, "/orders/a/b/cancel")


def _routes() -> list[dict]:  # type: ignore[type-arg]
    config = envoy_config(APIS, SETTINGS)
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]  # type: ignore[no-any-return]


def test_only_reads_are_retried() -> None:
    for route in _routes():
        if "route" not in route:
            continue
        method = route["match"]["headers"][0]
        reads = method["string_match"]["safe_regex"]["regex"] == "GET|HEAD"
        retried = "retry_policy" in route["route"]
        assert retried == (reads and not method.get("invert_match", False)), route["name"]


def test_every_api_is_under_its_prefix_with_the_prefix_stripped() -> None:
    prefixed = {r["match"]["prefix"]: r["route"] for r in _routes() if "prefix" in r["match"]}
    for api in APIS:
        assert prefixed[f"/{api.name}/"]["prefix_rewrite"] == "/"
        assert prefixed[f"/{api.name}/"]["cluster"] == api.name


def test_jwt_is_required_but_for_health_and_docs() -> None:
    config = envoy_config(APIS, SETTINGS)
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (jwt_filter,) = [
        f for f in manager["typed_config"]["http_filters"] if f["name"].endswith("jwt_authn")
    ]
    rules = jwt_filter["typed_config"]["rules"]
    open_paths = {rule["match"].get("path") for rule in rules if "requires" not in rule}
    assert {"/health", "/orders-api/health", "/query-api/docs", "/kitchen-api/openapi.json"} <= (
        open_paths
    )
    assert rules[-1] == {"match": {"prefix": "/"}, "requires": {"provider_name": "issuer"}}
    provider = jwt_filter["typed_config"]["providers"]["issuer"]
    assert provider["forward"] is True
    assert provider["local_jwks"] == {"filename": "/tmp/jwks.json"}


def test_an_http_jwks_url_is_fetched_through_a_cluster_of_its_own() -> None:
    settings = GatewaySettings(jwks_url="https://id.example/realms/x/certs")
    config = envoy_config(APIS, settings)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert clusters["jwks"]["transport_socket"]["typed_config"]["sni"] == "id.example"


PROCFILE = (
    "orders-api: exec uvicorn write_side.orders.api:create_app --factory --host 127.0.0.1 "
    "--port $ORDERS_API_PORT\n"
    "orders-relay: exec python -m write_side.orders.relay\n"
    "query-api: exec uvicorn read_side.api:create_app --factory --port ${QUERY_API_PORT}\n"
)


def test_the_procfile_apis_are_found() -> None:
    assert procfile_apis(PROCFILE) == [
        ("orders-api", "write_side.orders.api:create_app", "ORDERS_API_PORT"),
        ("query-api", "read_side.api:create_app", "QUERY_API_PORT"),
    ]


def test_scale_out_adds_processes_on_ports_of_their_own() -> None:
    text, extra = scale_out(PROCFILE, {"ORDERS_API_PROCESSES": "3"})
    ports = extra["orders-api"]
    assert len(set(ports)) == 2
    lines = text.splitlines()
    assert lines[0].endswith("--port $ORDERS_API_PORT")
    assert lines[1].startswith("orders-api-2: exec uvicorn")
    assert lines[1].endswith(f"--port {ports[0]}")
    assert lines[2].endswith(f"--port {ports[1]}")
    assert "query-api-2" not in text
    assert scale_out(PROCFILE, {}) == (PROCFILE, {})
