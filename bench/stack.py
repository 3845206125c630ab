"""The system's processes and stores, set up for one scenario and torn down after it."""

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx
import sqlalchemy

from bench.scenario import BenchContext
from devstack import processes
from devstack.run import stack_topics
from devstack.servers import KafkaBroker, run_sync
from kernel.kafka import ensure_topics

log = logging.getLogger("bench")

PARTITIONS = 4


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        yield schema
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def postgres_available(url: str) -> bool:
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sqlalchemy.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def stores(context: BenchContext, notes: list[str], *, postgres: bool = True) -> list[str]:
    """The event stores to measure: SQLite, and PostgreSQL if asked for and reachable
    (if it is not, a line in ``notes`` says it was not measured)."""
    if not postgres:
        return ["SQLite"]
    if not postgres_available(context.postgres_url):
        notes.append(f"PostgreSQL at {context.postgres_url} unreachable: not measured")
        return ["SQLite"]
    return ["SQLite", "PostgreSQL"]


@contextlib.contextmanager
def system_broker(data_dir: Path) -> Iterator[KafkaBroker]:
    """A broker of its own for one running system, with the services' topics and their
    dead-letter topics.

    The topic names are the system's own (``orders``, ...), so two systems on one broker
    would read each other's events: each gets a broker (it starts in well under a second).
    """
    with KafkaBroker(data_dir) as broker:
        run_sync(lambda: ensure_topics(broker.bootstrap, stack_topics(PARTITIONS)))
        yield broker


def system_env(broker: KafkaBroker, mongo_url: str, work: Path) -> dict[str, str]:
    """The settings every process of one benchmarked system shares: its broker, a fresh
    read-model database and consumer group, and the relays' wake-ups, as `cqrs run` sets
    them for the local broker (ADR 22)."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": f"bench_{uuid.uuid4().hex[:8]}",
        "PROJECTIONS_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "PROJECTIONS_DATA_DIR": str(work / "faust"),
        "KAFKA_EMPTY_FETCH_INTERVAL": "0.01",
        "KAFKA_FETCH_WAKEUP_DIR": str(work / "kafka-wakeups"),
    }


class System:
    """Processes started for a scenario; stopped (SIGTERM, by PID) when it ends."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.running: list[processes.Process] = []

    def start(self, process: processes.Process) -> processes.Process:
        self.running.append(process)
        return process

    def wait_healthy(self, *urls: str, timeout: float = 90) -> None:
        """Poll each ``/health`` until 200; a process that died is reported at once."""
        deadline = time.monotonic() + timeout
        for url in urls:
            while True:
                self.check_alive()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} not healthy within {timeout:g} s\n{self.logs()}")
                time.sleep(0.2)

    def check_alive(self) -> None:
        if dead := [p.name for p in self.running if not p.alive()]:
            raise RuntimeError(f"process(es) {', '.join(dead)} exited\n{self.logs()}")

    def logs(self) -> str:
        return processes.logs(*self.running)

    def stop(self) -> None:
        processes.stop_all(self.running)
        self.running.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
