"""Start and stop the local Kafka- and MongoDB-compatible servers as separate processes.

Each server runs in its own session (process group) and is stopped by its PID, never by
name: SIGTERM to the group, then SIGKILL if it has not exited after a grace period.

- Kafka: the `noida-db` Rust binary shipped inside the `noida_db` wheel (MIT).
- MongoDB: `secantusd-py` from SecantusDB (GPL-2.0). It is never imported: it lives in
  its own virtual environment (`.venv-secantus`) and only ever runs as a process.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from kernel.kafka import ensure_topics
from kernel.sync import run_sync

LOCALHOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
SECANTUS_VENV = REPO_ROOT / ".venv-secantus"
SECANTUS_REQUIREMENT = "SecantusDB==0.7.0b3"

T = TypeVar("T")


class ServerError(RuntimeError):
    """A local server could not be started, or a request to it failed."""


# --------------------------------------------------------------------------- ports


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True if nothing listens on host:port (a bind attempt succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port left in TIME_WAIT by a stopped server counts as free,
        # one that another process listens on does not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOCALHOST) -> int:
    """A port on host that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts_connections(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------ binaries


def answers_200(url: str) -> bool:
    """A server's readiness page answers 200 (an HTTP server's `probe`)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def broker_binary() -> Path:
    """The noida-db binary inside the installed `noida_db` package (not its console wrapper)."""
    try:
        path = Path(str(importlib.resources.files("noida_db") / "noida-db"))
    except ModuleNotFoundError as exc:
        raise ServerError(
            "noida-db is not installed: run `make .venv` (pip install -e '.[dev]')"
        ) from exc
    if not path.is_file():
        raise ServerError(f"noida-db binary not found at {path}: reinstall noida-db")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def secantus_command() -> Path:
    """`<repo>/.venv-secantus/bin/secantusd-py` (it may not exist yet)."""
    return SECANTUS_VENV / "bin" / "secantusd-py"


def ensure_secantus_venv(quiet: bool = False) -> Path:
    """Create `.venv-secantus` with SecantusDB in it if missing; return `secantus_command()`."""
    command = secantus_command()
    if os.access(command, os.X_OK):
        return command
    if not quiet:
        print(f"installing {SECANTUS_REQUIREMENT} into {SECANTUS_VENV} ...", flush=True)
    # --clear: a half-made venv from an interrupted install is started over.
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(SECANTUS_VENV)], check=True)
    pip = [str(SECANTUS_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, SECANTUS_REQUIREMENT], check=True)
    if not os.access(command, os.X_OK):
        raise ServerError(f"{SECANTUS_REQUIREMENT} installed but {command} is missing")
    return command


# ---------------------------------------------------------------------------- async


# -------------------------------------------------------------------------- servers


class ManagedServer:
    """A server process started in its own session, ready-checked, and stopped by PID.

    Subclasses give `name`, `port_env`, `command()`, `url` and `probe()`.
    `data_dir` holds the server's storage (`data_dir/data`) and its log (`data_dir/<name>.log`).
    """

    name = "server"
    port_env = "PORT"

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        *,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port() if port is None else port
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.pid: int | None = None
        self.returncode: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- to override

    @property
    def storage_dir(self) -> Path:
        """Where the server keeps its data."""
        return self.data_dir / "data"

    @property
    def log_path(self) -> Path:
        """The file that receives the server's stdout and stderr."""
        return self.data_dir / f"{self.name}.log"

    @property
    def url(self) -> str:
        """How clients reach the server."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """The argv that starts the server in the foreground."""
        raise NotImplementedError

    def probe(self) -> bool:
        """One readiness check: True once the server really answers requests.

        Returns False (does not raise) while the server is not ready yet.
        """
        raise NotImplementedError

    # -- lifecycle

    @property
    def running(self) -> bool:
        """True while the process started by `start()` has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the process and wait until it answers; raise `ServerError` if it does not."""
        if self._process is not None:
            raise ServerError(f"{self.name} already started (pid {self.pid})")
        if not port_is_free(self.port):
            raise ServerError(
                f"port {self.port} is in use: stop what holds it or set {self.port_env}"
            )
        argv = self.command()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"=== {stamp} starting: {' '.join(argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.data_dir,
            )
        self.pid = self._process.pid
        self.returncode = None
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout
        interval = 0.05
        while True:
            code = self._process.poll()
            if code is not None:
                raise ServerError(
                    f"{self.name} (pid {self.pid}) exited with code {code} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self.probe():
                return
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"{self.name} (pid {self.pid}) did not answer on port {self.port} within "
                    f"{self.ready_timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(interval)
            interval = min(interval * 2, 0.5)

    def stop(self) -> int | None:
        """SIGTERM the server's process group, SIGKILL after `stop_timeout`; return its exit code.

        Safe to call twice and on a server that never started.
        """
        process = self._process
        if process is None:
            return self.returncode
        if process.returncode is None:  # not reaped yet, so the PID is still ours
            self._signal_group(signal.SIGTERM)
            self._signal_group(signal.SIGCONT)  # a stopped server holds SIGTERM until then
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                process.wait(timeout=10)
        self.returncode = process.returncode
        self._process = None
        return self.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.pid is not None
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log file."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} pid={self.pid} url={self.url!r}>"


class KafkaBroker(ManagedServer):
    """The noida-db Kafka-compatible broker (Kafka protocol only: `--only kafka`)."""

    name = "kafka"
    port_env = "KAFKA_PORT"

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT`, for `KAFKA_BOOTSTRAP_SERVERS`."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def url(self) -> str:
        """Same as `bootstrap`."""
        return self.bootstrap

    def command(self) -> list[str]:
        """`noida-db start --only kafka ...` (without --only it opens other protocols' ports)."""
        return [
            str(broker_binary()),
            "start",
            "--only",
            "kafka",
            "--host",
            LOCALHOST,
            "--kafka-port",
            str(self.port),
            "--data-dir",
            str(self.storage_dir),
        ]

    def probe(self) -> bool:
        """A metadata request (list topics) succeeds."""
        if not _accepts_connections(self.port):
            return False
        try:
            run_sync(lambda: list_topics(self.bootstrap, timeout=2.0))
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    def stop(self) -> int | None:
        """Stop the broker without losing what it acknowledged: first its own graceful
        stop of the Kafka service (`noida-db stop kafka`, through its control channel),
        which saves every acknowledged message and the idempotent producers' sequence
        numbers, then SIGTERM to its process group as every server.

        A SIGTERM alone is not enough: noida-db 0.2.3 still acknowledges produce requests
        while it exits and saves its data before the last of them, so the last batches
        acknowledged (measured: 20 to 40 messages of a steady stream) are gone after the
        restart, and its producers' sequence numbers with them (every later send of an
        idempotent producer then fails with OutOfOrderSequenceNumber). See docs/chaos.md.
        """
        if self.running:
            try:
                subprocess.run(
                    [str(broker_binary()), "stop", "kafka", "--data-dir", str(self.storage_dir)],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    cwd=self.data_dir,
                    timeout=self.stop_timeout,
                    check=True,
                )
            except (subprocess.SubprocessError, OSError) as error:
                with open(self.log_path, "ab") as log:  # the SIGTERM follows all the same
                    log.write(f"=== noida-db stop kafka failed: {error!r}\n".encode())
        return super().stop()


class MongoServer(ManagedServer):
    """SecantusDB's `secantusd-py`, a one-node replica set named `secantus`."""

    name = "mongo"
    port_env = "MONGODB_PORT"

    @property
    def url(self) -> str:
        """`mongodb://127.0.0.1:PORT/?directConnection=true`, for `MONGODB_URL`."""
        return f"mongodb://{LOCALHOST}:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        """`secantusd-py --host ... --port ... --storage-path ...` from `.venv-secantus`."""
        command = secantus_command()
        if not os.access(command, os.X_OK):
            raise ServerError(
                f"SecantusDB is not installed ({command} missing): run `make secantus` "
                "or `cqrs secantus`"
            )
        return [
            str(command),
            "--host",
            LOCALHOST,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage_dir),
            "--cache-size",
            "256M",
            "--log-level",
            "WARNING",
        ]

    def probe(self) -> bool:
        """`admin.command("ping")` succeeds."""
        if not _accepts_connections(self.port):
            return False
        client: MongoClient[dict[str, object]] = MongoClient(
            self.url, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
        )
        try:
            client.admin.command("ping")
        except PyMongoError:
            return False
        finally:
            client.close()
        return True


# --------------------------------------------------------------------------- topics


async def list_topics(bootstrap: str, timeout: float = 10.0) -> list[str]:
    """The broker's topic names (a metadata request)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
        async with asyncio.timeout(timeout):
            return await admin.list_topics()
    finally:
        await admin.close()


def create_topics(
    bootstrap: str, names: Sequence[str], partitions: int, timeout: float = 30.0
) -> None:
    """Create the topics if missing, each with `partitions` (see `ensure_topics`)."""
    run_sync(lambda: ensure_topics(bootstrap, dict.fromkeys(names, partitions), timeout))
