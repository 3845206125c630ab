"""Prometheus metrics of every process (``prometheus-client``), named ``cqrs_*``.

One module holds every metric the kernel exports, so their names and labels are in one
place (docs/metrics.md lists them; ADR 33 says why these). The kernel's mechanisms call
the small functions below; the APIs serve ``GET /metrics`` themselves (``install``), the
relays and the Faust workers on their health port (``kernel.health``).

Labels stay bounded: a route is its template (``/orders/{order_id}``), never the raw
path; a topic and a partition, a consumer group, a service, an outcome from a short list.

``METRICS_ENABLED=false`` turns every recording off (the middleware is not installed,
the functions return at once): the benchmark compares both (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from functools import partial
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NAMESPACE = "cqrs"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

# The kinds of metric, each named cqrs_* (``NAMESPACE``).
_counter = partial(Counter, namespace=NAMESPACE)
_gauge = partial(Gauge, namespace=NAMESPACE)
_histogram = partial(Histogram, namespace=NAMESPACE)


def enabled() -> bool:
    """``METRICS_ENABLED`` (default true): read once per process."""
    return _ENABLED


def _env_enabled() -> bool:
    return os.environ.get("METRICS_ENABLED", "true").strip().lower() not in ("0", "false", "no")


_ENABLED = _env_enabled()

# ---------------------------------------------------------------------------- HTTP

HTTP_REQUESTS = _counter(
    "http_requests",
    "HTTP requests answered, by route template and status.",
    ["app", "method", "route", "status"],
)
HTTP_DURATION = _histogram(
    "http_request_duration_seconds",
    "Seconds from a request's head to its answer's last byte, by route template.",
    ["app", "method", "route"],
    buckets=LATENCY_BUCKETS,
)

# ------------------------------------------------------------------- write side

COMMANDS = _counter(
    "commands",
    "Commands run, by outcome: ok, rejected (a domain error or not found: 4xx), "
    "conflict (another writer), error (anything else).",
    ["service", "outcome"],
)
GROUP_COMMIT_BATCH = _histogram(
    "group_commit_batch_size",
    "Commands (with their events) committed in one transaction by the group commit.",
    ["service"],
    buckets=BATCH_BUCKETS,
)

# ------------------------------------------------------------------------ relay

RELAY_PUBLISHED = _counter(
    "relay_published_events",
    "Store notifications the broker acknowledged (their position passed): the publish rate.",
    ["topic"],
)
RELAY_LAG_EVENTS = _gauge(
    "relay_lag_events",
    "Notifications in the store after the last one acknowledged (leader only).",
    ["topic"],
)
RELAY_LAG_SECONDS = _gauge(
    "relay_lag_seconds",
    "Seconds between the store's newest event and the last one acknowledged (leader only).",
    ["topic"],
)
RELAY_LEADER = _gauge(
    "relay_leader",
    "1 while this relay leads (publishes), 0 while it stands by.",
    ["topic"],
)

# -------------------------------------------------------------------- consumers

CONSUMER_LAG = _gauge(
    "consumer_lag_messages",
    "Messages on the partition after the last one this worker handled.",
    ["group", "topic", "partition"],
)
REACTIONS = _counter(
    "reactions",
    "Messages a saga worker handled, by outcome: done, dead-lettered, rerun (a conflict), "
    "retried (an infrastructure error: the batch runs again).",
    ["consumer", "outcome"],
)
PROJECTION_WRITES = _counter(
    "projection_writes",
    "Read-model documents written by outcome: written, rejected (dead-lettered event), "
    "conflict (the batch was applied again), retried (an infrastructure error).",
    ["projection", "outcome"],
)
DEAD_LETTERS = _counter(
    "dead_letters",
    "Messages sent to a dead-letter topic, by consumer, source topic and reason kind.",
    ["consumer", "topic", "kind"],
)
SAGAS_STARTED = _counter(
    "sagas_started",
    "Sagas that began (their first command was committed), by saga.",
    ["saga"],
)
SAGAS_ENDED = _counter(
    "sagas_ended",
    "Sagas that ended, by saga and outcome.",
    ["saga", "outcome"],
)
SAGA_DURATION = _histogram(
    "saga_duration_seconds",
    "Seconds from a saga's first event to its end, by saga and outcome.",
    ["saga", "outcome"],
    buckets=SAGA_BUCKETS,
)

# ----------------------------------------------------------------------- health


class _HealthGauges:
    """``cqrs_ready`` and ``cqrs_event_loop_lag_seconds``, made by the first process
    health (``kernel.health``) that runs: an API, whose health is its routes, exports
    neither (rather than a ``cqrs_ready 0`` that would say it is not ready)."""

    def __init__(self) -> None:
        self._gauges: tuple[Gauge, Gauge] | None = None

    def __call__(self) -> tuple[Gauge, Gauge]:
        if self._gauges is None:
            ready = _gauge(
                "ready",
                "1 while the relay or worker is ready (connected to what it needs, lag "
                "under its threshold).",
            )
            lag = _gauge(
                "event_loop_lag_seconds",
                "How late the event loop's last heartbeat ran (a blocked loop makes it grow).",
            )
            self._gauges = (ready, lag)
        return self._gauges


health_gauges = _HealthGauges()


# ------------------------------------------------------------------ recording


def command_outcome(service: str, outcome: str) -> None:
    if _ENABLED:
        COMMANDS.labels(service, outcome).inc()


def group_commit_batch(service: str, size: int) -> None:
    if _ENABLED:
        GROUP_COMMIT_BATCH.labels(service).observe(size)


def relay_published(topic: str, notifications: int) -> None:
    if _ENABLED and notifications:
        RELAY_PUBLISHED.labels(topic).inc(notifications)


def reactions(consumer: str, outcome: str, count: int) -> None:
    if _ENABLED and count:
        REACTIONS.labels(consumer, outcome).inc(count)


def projection_writes(projection: str, outcome: str, count: int) -> None:
    if _ENABLED and count:
        PROJECTION_WRITES.labels(projection, outcome).inc(count)


def dead_letter(consumer: str, topic: str, kind: str) -> None:
    if _ENABLED:
        DEAD_LETTERS.labels(consumer, topic, kind).inc()


def saga_started(saga: str) -> None:
    if _ENABLED:
        SAGAS_STARTED.labels(saga).inc()


def saga_ended(saga: str, outcome: str, started: datetime) -> None:
    """A saga ended now (``started``: when it began, timezone-aware)."""
    if not _ENABLED:
        return
    end = datetime.now(started.tzinfo)
    SAGAS_ENDED.labels(saga, outcome).inc()
    SAGA_DURATION.labels(saga, outcome).observe(max(0.0, (end - started).total_seconds()))


# ------------------------------------------------------------------ exposition


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry's metrics in Prometheus' text format."""
    return generate_latest(registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST

UNMATCHED = "<unmatched>"
"""The route label of a request no route matched (404s of any path: one series)."""


class HttpMetrics:
    """Pure-ASGI middleware: every HTTP request counted by its route's template and its
    status, and timed. Outermost, so that what the request guard or an error handler
    answers is counted too; ``/metrics`` itself is not counted."""

    def __init__(self, app: ASGIApp, name: str):
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"]
            HTTP_REQUESTS.labels(self.name, method, template, str(status)).inc()
            HTTP_DURATION.labels(self.name, method, template).observe(time.perf_counter() - started)


def install(app: Any, name: str) -> None:
    """``GET /metrics`` on a FastAPI app (public, outside the OpenAPI document) and, with
    metrics enabled, the HTTP middleware."""
    from fastapi.responses import Response

    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    if _ENABLED:
        app.add_middleware(HttpMetrics, name=name)
