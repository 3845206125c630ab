"""The system's processes for tests: they live in `devstack.processes` (the benchmarks use
them too); `running_apis` starts a set of API processes for a test module."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from devstack.processes import (
    Process,
    api,
    faust_worker,
    logs,
    projections_worker,
    relay,
    stop_all,
)
from devstack.servers import free_port
from tests.support import wait_for

PROJECT = Path(__file__).resolve().parents[1]

__all__ = [
    "Process",
    "api",
    "faust_worker",
    "logs",
    "projections_worker",
    "relay",
    "running_apis",
    "stop_all",
]


@contextmanager
def running_apis(
    factories: Mapping[str, str],
    env: Mapping[str, str],
    log_dir: Path,
    ports: Mapping[str, int] | None = None,
) -> Iterator[tuple[dict[str, str], list[Process]]]:
    """One process per API (``{service: "module:create_app"}``), on `ports` or free ones;
    yields each one's URL once all answer `/health`, and the processes; stops them by PID."""
    ports = ports or {service: free_port() for service in factories}
    running = [
        api(f"{service}-api", factory, ports[service], dict(env), log_dir)
        for service, factory in factories.items()
    ]
    urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
    try:
        for url in urls.values():
            wait_for(
                lambda url=url: httpx.get(f"{url}/health").raise_for_status(),
                timeout=60,
                ignore=(httpx.TransportError, httpx.HTTPStatusError),
                message=f"{url} healthy\n{logs(*running)}",
            )
        yield urls, running
        assert all(process.alive() for process in running), logs(*running)
    finally:
        stop_all(running)


def started_api(name: str, factory: str, env: dict[str, str], log_dir: Path) -> tuple[str, Process]:
    """An API process, once it answers `/health` (whatever it answers: its store may be
    away); its URL and the process."""
    port = free_port()
    process = api(name, factory, port, {"PYTHONPATH": str(PROJECT), **env}, log_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/health", timeout=10),
            timeout=60,
            ignore=(httpx.TransportError,),
            message=f"{name} answering\n{logs(process)}",
        )
    except BaseException:
        process.stop()
        raise
    return url, process
