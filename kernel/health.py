"""Liveness and readiness of a process, and the small HTTP server of the workers.

**Live** means the process should not be restarted: its event loop's heartbeat ran
within ``HEALTH_MAX_LOOP_BLOCK`` seconds, and no consumer task of it has been down for
longer than ``HEALTH_CONSUMER_DEAD_AFTER`` seconds (a Faust worker whose agent died and
was not brought back looks alive otherwise: the bug class of faust-streaming #523), and
no assigned partition of a worker is stalled (``StallWatch``).

**Ready** means it does its work now: live, every check passed when last run (the
broker, the store, MongoDB: what the process needs), every consumer task running, and
every lag the process watches under ``HEALTH_MAX_LAG``.

The checks run in the event loop, every ``HEALTH_CHECK_INTERVAL`` seconds, each within
``HEALTH_CHECK_TIMEOUT``; so does the heartbeat. The HTTP server (``serve``) runs in a
thread of its own and only reads what they left: it answers even while the loop is
blocked, and then says so (``503``), which a probe that times out could not. It serves
``/health/live``, ``/health/ready`` and ``/metrics`` on ``HEALTH_PORT`` (0: no server).
The APIs answer the same ``/health/live`` and ``/health/ready`` as routes of their own
app (``install_routes``).

One ``Health`` per process (``current()``): the relay, the Faust worker's agents and
the kernel's consumer loop (``kernel.streams.handle_batches``) register with it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel import metrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]
"""An async probe: raises (or times out) when what it checks is not there."""
Sampler = Callable[[], object]
"""Run with the checks (sync or async): updates gauges; returns a lag problem or None."""


class HealthSettings(BaseSettings):
    """Environment: HEALTH_PORT, HEALTH_MAX_LOOP_BLOCK, ... (docs/configuration.md)."""

    model_config = SettingsConfigDict(env_prefix="HEALTH_", extra="ignore")

    port: int = Field(default=0, ge=0, le=65535)
    """The relays' and the Faust workers' health and metrics port; 0: none (the APIs
    answer on their own port)."""
    host: str = "127.0.0.1"
    """Where that server listens (compose: 0.0.0.0)."""
    max_loop_block: float = Field(default=10.0, gt=0)
    """Seconds without a heartbeat of the event loop after which the process is not live."""
    consumer_dead_after: float = Field(default=30.0, gt=0)
    """Seconds a consumer task may stay down (Faust may restart it) before the process is
    not live; it is unready at once."""
    consumer_stable_after: float = Field(default=5.0, gt=0)
    """Seconds a restarted consumer task must run (or one batch it must handle) before it
    counts as back: one that dies again at once stays down."""
    check_interval: float = Field(default=2.0, gt=0)
    check_timeout: float = Field(default=2.0, gt=0)
    heartbeat_interval: float = Field(default=0.5, gt=0)
    max_lag: int = Field(default=10_000, ge=0)
    """Events (relay) or messages per partition (workers) behind, beyond which the
    process is not ready."""
    stall_after: float = Field(default=60.0, gt=0)
    """Seconds a worker's assigned partition may stay behind the broker's end while the
    worker handles nothing before it counts as stalled: not live, and a Faust worker
    exits so that its supervisor starts it again (``kernel.streams.Worker``)."""


@dataclass
class Consumer:
    """A consumer task's state, as it reports it."""

    name: str
    running: bool = False
    started_at: float = 0.0
    down_since: float | None = None
    error: str | None = None
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """The last offset handled per (topic, partition)."""
    busy_since: float | None = None
    """When the batch in hand was taken (it is handled, or retried while a server is
    away); None between batches."""
    busy_total: float = 0.0
    """Seconds spent on batches before the one in hand."""

    def started(self) -> None:
        self.running, self.started_at = True, time.monotonic()

    def stopped(self, error: BaseException | None) -> None:
        self.running = False
        self.error = None if error is None else f"{type(error).__name__}: {error}"
        if self.down_since is None:
            self.down_since = time.monotonic()

    def handled(self, topic: str, partition: int, offset: int) -> None:
        self.offsets[(topic, partition)] = offset
        self.down_since = None  # it works again

    def taken(self) -> None:
        self.busy_since = time.monotonic()

    def done(self) -> None:
        if self.busy_since is not None:
            self.busy_total += time.monotonic() - self.busy_since
            self.busy_since = None

    def busy_seconds(self, now: float) -> float:
        """Seconds spent on batches so far (the one in hand included)."""
        return self.busy_total + (0.0 if self.busy_since is None else now - self.busy_since)

    def down_for(self, stable_after: float) -> float | None:
        """Seconds it has been down (counting a restart that did not last), or None."""
        now = time.monotonic()
        if self.down_since is None:
            return None if self.running else 0.0
        if self.running and now - self.started_at >= stable_after:
            self.down_since = None
            return None
        return now - self.down_since


class Health:
    def __init__(self, settings: HealthSettings | None = None):
        self.settings = settings or HealthSettings()
        self.checks: dict[str, Check] = {}
        self.samplers: dict[str, Sampler] = {}
        self.results: dict[str, str | None] = {}
        self.checked_at: float | None = None
        self.beat_at = time.monotonic()
        self.consumers: dict[str, Consumer] = {}
        self.stalled: dict[str, str] = {}
        """Liveness problems a sampler found (``StallWatch``): what a restart cures."""
        self._task: asyncio.Task[None] | None = None
        self._server: ThreadingHTTPServer | None = None

    # registration

    def add_check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def add_sampler(self, name: str, sampler: Sampler) -> None:
        self.samplers[name] = sampler

    def consumer(self, name: str) -> Consumer:
        return self.consumers.setdefault(name, Consumer(name))

    # the loop's side

    def start(self) -> None:
        """Start the heartbeat and the checks in the running loop (once)."""
        if self._task is None or self._task.done():
            self.beat_at = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        interval = self.settings.heartbeat_interval
        next_check = 0.0
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.beat_at = now
            if metrics.enabled():
                metrics.health_gauges()[1].set(max(0.0, now - before - interval))
            if now >= next_check:
                next_check = now + self.settings.check_interval
                await self.run_checks()

    async def run_checks(self) -> None:
        names = [*self.checks, *self.samplers]
        outcomes = await asyncio.gather(
            *(self._checked(self.checks[name]) for name in self.checks),
            *(self._sampled(self.samplers[name]) for name in self.samplers),
        )
        self.results = dict(zip(names, outcomes, strict=True))
        self.checked_at = time.monotonic()
        if metrics.enabled():
            metrics.health_gauges()[0].set(1 if self.ready()[0] else 0)

    async def _checked(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(self.settings.check_timeout):
                await check()
        except TimeoutError:
            return f"no answer within {self.settings.check_timeout:g} s"
        except Exception as error:  # noqa: BLE001 - whatever it is, the check failed
            return f"{type(error).__name__}: {error}"
        return None

    async def _sampled(self, sampler: Sampler) -> str | None:
        try:
            outcome = sampler()
            if inspect.isawaitable(outcome):
                async with asyncio.timeout(self.settings.check_timeout):
                    outcome = await outcome
        except Exception as error:  # noqa: BLE001
            return f"{type(error).__name__}: {error}"
        return None if outcome is None else str(outcome)

    # anyone's side (the HTTP thread's too)

    def live(self) -> tuple[bool, dict[str, Any]]:
        problems: dict[str, Any] = {}
        blocked = time.monotonic() - self.beat_at
        if self._task is not None and blocked > self.settings.max_loop_block:
            problems["event_loop"] = f"no heartbeat for {blocked:.1f} s"
        for consumer in list(self.consumers.values()):
            down = consumer.down_for(self.settings.consumer_stable_after)
            if down is not None and down > self.settings.consumer_dead_after:
                problems[f"consumer {consumer.name}"] = f"down for {down:.0f} s" + (
                    f" ({consumer.error})" if consumer.error else ""
                )
        problems.update(self.stalled)
        return not problems, problems

    def ready(self) -> tuple[bool, dict[str, Any]]:
        live, problems = self.live()
        if self._task is not None:
            if self.checked_at is None:
                problems["checks"] = "not run yet"
            elif time.monotonic() - self.checked_at > max(
                self.settings.max_loop_block, 3 * self.settings.check_interval
            ):
                problems["checks"] = "stale (the event loop is blocked?)"
        problems.update({name: problem for name, problem in self.results.items() if problem})
        for consumer in list(self.consumers.values()):
            down = consumer.down_for(self.settings.consumer_stable_after)
            if down is not None:
                problems.setdefault(
                    f"consumer {consumer.name}",
                    "not running" + (f" ({consumer.error})" if consumer.error else ""),
                )
        return live and not problems, problems

    # the HTTP server

    def serve(self, port: int | None = None, host: str | None = None) -> int | None:
        """Serve ``/health/live``, ``/health/ready`` and ``/metrics`` in a thread; the
        port it listens on (None when ``HEALTH_PORT`` is 0 and no port is given)."""
        port = self.settings.port if port is None else port
        if not port or self._server is not None:
            return None if self._server is None else self._server.server_address[1]
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, metrics.exposition(), metrics.CONTENT_TYPE)
                elif path in ("/health/live", "/health/ready", "/health"):
                    ok, problems = health.ready() if path == "/health/ready" else health.live()
                    body = {"status": "ok" if ok else "failing", "problems": problems}
                    self._answer(200 if ok else 503, json.dumps(body).encode(), "application/json")
                else:
                    self._answer(404, b'{"status":"not found"}', "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds: no access log

        server = ThreadingHTTPServer((host or self.settings.host, port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
        bound = int(server.server_address[1])
        log.info(
            "health and metrics on http://%s:%d (/health/live, /health/ready, /metrics)",
            host or self.settings.host,
            bound,
        )
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


Partition = tuple[str, int]


class StallWatch:
    """Partitions that stay behind the broker's end while the worker handles nothing.

    A consumer that silently stops fetching a partition looks healthy otherwise: its
    task runs, its other partitions move, the lag of its last fetch says 0 (the bug
    class of faust-streaming #175/#523 and quix-streams #1124, seen here once after a
    broker restart); only a restart brings the partition back. A partition counts as
    stalled once it has been behind, its last handled offset unchanged, for ``stall_after``
    seconds of the worker's idle time: time spent on a batch (one retried while a server
    is away, say) does not count, so a slow or waiting worker is not taken for a stalled
    one.
    """

    def __init__(self, stall_after: float):
        self.stall_after = stall_after
        self._waiting: dict[Partition, tuple[int, float]] = {}
        """Per partition behind: its next offset, and the idle seconds it has not moved."""
        self._last: tuple[float, float] | None = None  # (when, busy seconds) last observed

    def observe(
        self, behind: dict[Partition, tuple[int, int]], busy_seconds: float, now: float
    ) -> dict[Partition, tuple[int, float]]:
        """``behind``: per assigned partition, (next offset to handle, broker's end offset).
        The stalled ones: how many messages behind, and for how many idle seconds."""
        idle = 0.0
        if self._last is not None:
            idle = max(0.0, (now - self._last[0]) - (busy_seconds - self._last[1]))
        self._last = (now, busy_seconds)
        stalled: dict[Partition, tuple[int, float]] = {}
        for partition in list(self._waiting):
            if partition not in behind:
                del self._waiting[partition]  # given to another worker
        for partition, (next_offset, end) in behind.items():
            seen = self._waiting.get(partition)
            if end <= next_offset:
                self._waiting.pop(partition, None)
            elif seen is None or seen[0] != next_offset:
                self._waiting[partition] = (next_offset, 0.0)
            else:
                waited = seen[1] + idle
                self._waiting[partition] = (next_offset, waited)
                if waited >= self.stall_after:
                    stalled[partition] = (end - next_offset, waited)
        return stalled

    def pause(self) -> None:
        """The broker's ends could not be read: the time until the next look is not
        counted (a broker away is not a stall)."""
        self._last = None


_current: Health | None = None


def current() -> Health:
    """The process's Health (made at first use, from the environment)."""
    global _current
    if _current is None:
        _current = Health()
    return _current


async def broker_check(producer: Any) -> None:
    """The broker answers a metadata request (over a started aiokafka producer's client)."""
    await producer.client.fetch_all_metadata()


def store_check(recorder: Any) -> Check:
    """The event store answers a query (in a worker thread)."""

    async def check() -> None:
        await asyncio.to_thread(recorder.max_notification_id)

    return check


def mongo_check(database: Any) -> Check:
    async def check() -> None:
        await database.command("ping")

    return check


def install_routes(app: Any, ready: Callable[[], Awaitable[dict[str, str]]]) -> None:
    """``GET /health/live`` and ``GET /health/ready`` on an API's own app: live while the
    loop answers at all; ready when ``ready()`` returns no problems (name → problem)."""
    from fastapi.responses import JSONResponse

    async def live() -> JSONResponse:
        return JSONResponse({"status": "ok", "problems": {}})

    async def readiness() -> JSONResponse:
        problems = await ready()
        body = {"status": "failing" if problems else "ok", "problems": problems}
        return JSONResponse(body, status_code=503 if problems else 200)

    app.add_api_route("/health/live", live, methods=["GET"], include_in_schema=False)
    app.add_api_route("/health/ready", readiness, methods=["GET"], include_in_schema=False)


async def problems_of(checks: dict[str, Check], timeout: float) -> dict[str, str]:
    """Run ``checks`` at once, each within ``timeout``: name → problem, for those failing."""
    health = Health(HealthSettings(check_timeout=timeout))
    outcomes = await asyncio.gather(*(health._checked(check) for check in checks.values()))
    return {name: problem for name, problem in zip(checks, outcomes, strict=True) if problem}
