"""Start the system's processes (APIs, relays, Faust workers); stop them by PID, never by name.

Used by the tests and the benchmarks. Each process runs in its own session, logs to
`<log_dir>/<name>.log`, and is stopped with SIGTERM to its group, SIGKILL after a grace
period. One that does not stop in time first gets SIGABRT: Python's fault handler (on in
every process started here) writes each thread's stack to its log, which says where it hung.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            env={**os.environ, "PYTHONFAULTHANDLER": "1", **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, SIGKILL after ``timeout``."""
        stop_all([self], timeout)

    def terminate(self) -> None:
        """SIGTERM, then SIGCONT: a stopped (SIGSTOPped) process would otherwise hold the
        SIGTERM until the SIGKILL."""
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            os.killpg(self.pid, signal.SIGCONT)

    def dump_stacks(self, timeout: float = 2) -> None:
        """SIGABRT: the fault handler writes every thread's stack to the log, then the
        process ends (a process that would not stop: where did it hang?)."""
        if self.alive():
            os.killpg(self.pid, signal.SIGABRT)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass

    def cpu_seconds(self) -> float | None:
        """CPU time (user and system, all threads) the process has used so far, from
        /proc (None where there is none, or once it has exited)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (name) "
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def stop_all(processes: Iterable[Process], timeout: float = 15) -> None:
    """Stop processes together: SIGTERM to each, then wait for them all, SIGKILL to what
    is left after ``timeout`` (a stack's fourteen processes shut down side by side, not
    one after the other)."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.dump_stacks()
            process.kill()
        process._log.close()


def python_module(module: str, *args: str, profile: Path | None = None) -> list[str]:
    """`python -m module args...`; with `profile`, under pyinstrument, saving the profile
    session there when the process exits (see `devstack.profiled`)."""
    if profile is None:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-m", "devstack.profiled", str(profile), module, *args]


def relay(
    env: dict[str, str],
    log_dir: Path,
    name: str = "orders-relay",
    service: str = "orders",
    *,
    profile: Path | None = None,
) -> Process:
    return Process(
        name, python_module(f"write_side.{service}.relay", profile=profile), env, log_dir
    )


def faust_worker(
    name: str, app: str, env: dict[str, str], log_dir: Path, *, profile: Path | None = None
) -> Process:
    argv = python_module(
        "faust", "-A", app, "worker", "--without-web", "--loglevel=warn", profile=profile
    )
    return Process(name, argv, env, log_dir)


def projections_worker(
    env: dict[str, str], log_dir: Path, *, profile: Path | None = None
) -> Process:
    return faust_worker("projections", "projections.worker:app", env, log_dir, profile=profile)


def api(
    name: str,
    factory: str,
    port: int,
    env: dict[str, str],
    log_dir: Path,
    *,
    profile: Path | None = None,
) -> Process:
    argv = python_module(
        "uvicorn",
        factory,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # Start-up and shutdown lines explain a failed test; the access log would only be noise.
        "--log-level",
        "info",
        "--no-access-log",
        profile=profile,
    )
    return Process(name, argv, env, log_dir)


def logs(*running: Process) -> str:
    """The tail of each process's log, to explain a failure."""
    return "\n".join(f"--- {p.name} (alive: {p.alive()})\n{p.log()}" for p in running)
