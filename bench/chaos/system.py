"""One round's system: its broker, its stores and every process of the four services, each
started, `kill -9`ed and restarted by PID (never by name), as a process runner would.

The MongoDB-compatible server is the run's (`chaos.cli`), shared by the rounds, each with
a database of its own; a round restarts it once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from contracts import accounting, consumers, kitchen, orders
from devstack import processes
from devstack.identity import ensure_keys, jwks_url, mint_token
from devstack.run import stack_topics
from devstack.servers import KafkaBroker, MongoServer, free_port, run_sync
from kernel.group_membership import claim_path, group_instance_id
from kernel.kafka import ensure_topics

log = logging.getLogger("chaos")

SERVICES = ("orders", "consumers", "kitchen", "accounting")
PARTITIONS = 4
KINDS = ("api", "relay", "saga", "projections")
"""The kinds of process a schedule may kill (`--kill`)."""
PROJECTIONS_GROUP = "projections"
GROUP_TOPICS: dict[str, tuple[str, ...]] = {
    "orders-saga": (consumers.TOPIC, kitchen.TOPIC, accounting.TOPIC),
    "consumers-saga": (orders.TOPIC,),
    "kitchen-saga": (consumers.TOPIC, accounting.TOPIC),
    "accounting-saga": (kitchen.TOPIC,),
    PROJECTIONS_GROUP: (orders.TOPIC, consumers.TOPIC, kitchen.TOPIC, accounting.TOPIC),
}
"""Each consumer group and the topics it reads (`write_side/<service>/saga.py`, the
projections of `projections/registry.py`): a partition it never committed counts as lag."""


def standby_relays() -> bool:
    """Whether relays elect a leader (issue 17 item 2, `kernel.leadership`): then two run
    per service, as `make run` does."""
    return importlib.util.find_spec("kernel.leadership") is not None


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    kind: str
    argv: list[str]
    health_url: str | None = None  # APIs: /health answers 200 once it serves


def process_specs(urls: dict[str, str], relays_per_service: int) -> list[ProcessSpec]:
    """Every process of the system: per service its API, relays and saga worker; the
    projections worker and the query API."""
    specs = []
    for service in SERVICES:
        port = urls[service].rsplit(":", 1)[1]
        specs.append(
            ProcessSpec(
                f"{service}-api",
                "api",
                api_argv(f"write_side.{service}.api:create_app", port),
                f"{urls[service]}/health",
            )
        )
        for number in range(1, relays_per_service + 1):
            name = f"{service}-relay" if number == 1 else f"{service}-relay-{number}"
            specs.append(
                ProcessSpec(name, "relay", processes.python_module(f"write_side.{service}.relay"))
            )
        specs.append(
            ProcessSpec(f"{service}-saga", "saga", worker_argv(f"write_side.{service}.saga:app"))
        )
    specs.append(ProcessSpec("projections", "projections", worker_argv("projections.worker:app")))
    port = urls["query"].rsplit(":", 1)[1]
    specs.append(
        ProcessSpec(
            "query-api",
            "api",
            api_argv("read_side.api:create_app", port),
            f"{urls['query']}/health",
        )
    )
    return specs


def api_argv(factory: str, port: str) -> list[str]:
    return processes.python_module(
        "uvicorn", factory, "--factory", "--host", "127.0.0.1", "--port", port, "--no-access-log"
    )


def worker_argv(app: str) -> list[str]:
    return processes.python_module("faust", "-A", app, "worker", "--without-web", "--loglevel=warn")


@dataclass
class Exit:
    """A process that exited without being killed by the schedule (it is restarted)."""

    name: str
    at: float  # seconds into the round
    code: int | None


@dataclass
class System:
    """The processes of one round, by name; the broker; the settings they share."""

    work: Path
    broker: KafkaBroker
    mongo: MongoServer
    env: dict[str, str]
    urls: dict[str, str]
    specs: dict[str, ProcessSpec]
    token: str
    running: dict[str, processes.Process] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    """Killed by the schedule, not restarted yet: not an unexpected exit."""
    exits: list[Exit] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    incarnations: dict[str, int] = field(default_factory=dict)

    @property
    def mongo_database(self) -> str:
        return self.env["MONGODB_DATABASE"]

    def names(self, kinds: tuple[str, ...]) -> list[str]:
        return [name for name, spec in self.specs.items() if spec.kind in kinds]

    def start(self, name: str) -> None:
        spec = self.specs[name]
        self.incarnations[name] = self.incarnations.get(name, 0) + 1
        log_dir = self.work / "logs"
        log_dir.mkdir(exist_ok=True)
        process = processes.Process(name, spec.argv, self.env, log_dir)
        self.running[name] = process
        self.down.discard(name)

    def kill(self, name: str) -> None:
        """SIGKILL to the process's group: it gets no chance to clean up."""
        self.down.add(name)
        process = self.running[name]
        process.kill()
        process.stop()  # closes its log; it has exited already

    def restart(self, name: str) -> None:
        self.start(name)

    def restart_exited(self) -> list[Exit]:
        """Restart each process that exited by itself (a runner's restart policy); the
        exits, for the report."""
        found = []
        for name, process in list(self.running.items()):
            if name in self.down or process.alive():
                continue
            code = process.popen.returncode
            process.stop()
            exit_ = Exit(name, time.monotonic() - self.started_at, code)
            found.append(exit_)
            self.exits.append(exit_)
            log.warning("%s exited by itself (code %s): restarted", name, code)
            self.start(name)
        return found

    def healthy(self, name: str) -> bool:
        url = self.specs[name].health_url
        if url is None:
            return self.running[name].alive()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=2).status_code == 200
        return False

    def wait_healthy(self, timeout: float = 120) -> None:
        """Every API answers /health; a process that exits meanwhile is restarted (and
        listed), as a process runner would."""
        deadline = time.monotonic() + timeout
        for name, spec in self.specs.items():
            if spec.health_url is None:
                continue
            while not self.healthy(name):
                self.restart_exited()  # e.g. "database is locked" opening a new store
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not healthy within {timeout:g} s\n{self.logs()}")
                time.sleep(0.2)

    def logs(self) -> str:
        return processes.logs(*self.running.values())

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to every process's group at once, SIGKILL to what is left after
        `grace` seconds (the round is over: its checks have read what they need)."""
        running = list(self.running.values())
        for process in running:
            if process.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(deadline - time.monotonic(), 0.01))
            process.kill()
            process.stop()
        self.running.clear()

    def authorization(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def system_env(work: Path, broker: KafkaBroker, mongo: MongoServer) -> dict[str, str]:
    """The settings every process of the round shares, as `cqrs run` sets them for the
    local broker: SQLite stores in the round's folder, a fresh read-model database."""
    auth = work / "auth"
    ensure_keys(auth)
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "MONGODB_URL": mongo.url,
        "MONGODB_DATABASE": f"chaos_{uuid.uuid4().hex[:10]}",
        "PROJECTIONS_GROUP_ID": PROJECTIONS_GROUP,
        "PROJECTIONS_DATA_DIR": str(work / "faust"),
        "KAFKA_EMPTY_FETCH_INTERVAL": "0.01",
        "KAFKA_FETCH_WAKEUP_DIR": str(work / "kafka-wakeups"),
        # A worker that stops fetching a partition exits (and is restarted) within the
        # settling time (docs/metrics.md).
        "HEALTH_STALL_AFTER": "15",
        # An API killed between a commit and keeping its answer: its clients' retries
        # learn what was saved within the round (ADR 25), not after a minute.
        "IDEMPOTENCY_ANSWER_LOST_AFTER": "10",
        "AUTH_JWKS_URL": jwks_url(auth),
        **{f"{s.upper()}_DATABASE_URL": f"sqlite:///{work}/{s}.db" for s in SERVICES},
    }


@contextlib.contextmanager
def running_system(work: Path, mongo: MongoServer, relays_per_service: int) -> Iterator[System]:
    """A broker of the round's own with the stack's topics, and every process started and
    answering; everything stopped by PID afterwards, the round's database dropped."""
    broker = KafkaBroker(work / "kafka")
    broker.start()
    system: System | None = None
    try:
        run_sync(lambda: ensure_topics(broker.bootstrap, stack_topics(PARTITIONS)))
        env = system_env(work, broker, mongo)
        urls = {s: f"http://127.0.0.1:{free_port()}" for s in (*SERVICES, "query")}
        specs = {spec.name: spec for spec in process_specs(urls, relays_per_service)}
        token = mint_token("chaos", ["ops"], 3600, auth_dir=work / "auth")
        system = System(work, broker, mongo, env, urls, specs, token)
        for name in specs:
            system.start(name)
        system.wait_healthy()
        system.started_at = time.monotonic()
        yield system
    finally:
        if system is not None:
            system.stop()
        broker.stop()
        for group in GROUP_TOPICS:  # the workers' claims on their instance ids, now let go
            path = claim_path(broker.bootstrap, group, group_instance_id(group, 0))
            path.unlink(missing_ok=True)
