"""A PostgreSQL server of a test's own, to stop and start (the machine's one on 5432 is
shared): PostgreSQL 15's binaries, a cluster made by initdb in a fresh folder, trust
auth, on a free 127.0.0.1 port. Started and stopped with ``pg_ctl`` on its data dir
(``pg_ctl stop`` signals the PID in its ``postmaster.pid``), never by name.

PostgreSQL refuses to run as root: as root, its binaries run as the ``postgres`` user,
which owns the folder.
"""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.servers import LOCALHOST, free_port

BIN = Path(os.environ.get("POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    """The binaries are there (and, as root, a ``postgres`` user to run them)."""
    if not (BIN / "initdb").exists():
        return False
    return os.geteuid() != 0 or shutil.which("runuser") is not None


class PostgresCluster:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pg-cluster-"))
        self.data_dir = self.folder / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{LOCALHOST}:{self.port}/postgres"

    def _run(self, binary: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(BIN / binary), *args],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -h {LOCALHOST} -k {self.folder} -c fsync=off"
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "start", "-D", str(self.data_dir), "-w", "-l", log, "-o", options)

    def stop(self) -> None:
        """A fast shutdown: its clients' connections are cut, as in a restart."""
        self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-w", "-m", "fast")

    def remove(self) -> None:
        """Stop the server if it runs, and delete its folder."""
        if (self.data_dir / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-3000:]
        except OSError as error:
            return f"(no log: {error})"


def private_cluster() -> Iterator[PostgresCluster]:
    """A fixture's cluster, removed afterwards (`yield from` it); skips the test where
    PostgreSQL's server binaries are not installed."""
    if not available():
        pytest.skip(f"no PostgreSQL binaries at {BIN}")
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.remove()
