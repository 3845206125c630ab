"""Prometheus under `cqrs run`, when Debian's `prometheus` is installed (optional).

The runner gives each relay and Faust worker of its Procfile a `HEALTH_PORT` of its own
(`with_health_ports`): its /metrics and /health/* are there; an API serves them on its
own port. The scrape configuration lists them all (`devstack.scrape`), with the alert
rules of compose (`devstack/compose/prometheus/alerts.yml`), in `var/prometheus/`.
Without the `prometheus` binary the processes still serve their metrics; the runner
says how to get it (`apt-get install prometheus`).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from devstack.console import PROCFILE_LINE
from devstack.gateway import PROCFILE_API, Api
from devstack.scrape import local_scrape_config
from devstack.servers import LOCALHOST, REPO_ROOT, ManagedServer, answers_200, free_port

PROMETHEUS_PORT = 9090


def with_health_ports(procfile_text: str) -> tuple[str, dict[str, list[tuple[str, int]]]]:
    """The Procfile with `HEALTH_PORT=<a free port>` for each process that is not an
    API (`export HEALTH_PORT=...; command`), and those processes' endpoints."""
    lines, endpoints = [], {}
    taken: set[int] = set()
    for line in procfile_text.splitlines():
        match = PROCFILE_LINE.match(line)
        if match is None or PROCFILE_API.match(line) or match["name"] == "demo":
            lines.append(line)
            continue
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        lines.append(f"{match['name']}: export HEALTH_PORT={port}; {match['command'].strip()}")
        endpoints[match["name"]] = [(LOCALHOST, port)]
    return "\n".join(lines) + "\n", endpoints


def scrape_targets(
    apis: list[Api], workers: Mapping[str, list[tuple[str, int]]]
) -> dict[str, list[tuple[str, int]]]:
    """Every process to scrape: each API process (`orders-api`, `orders-api-2`) and
    each relay and worker."""
    targets: dict[str, list[tuple[str, int]]] = {}
    for api in apis:
        for number, endpoint in enumerate(api.endpoints, start=1):
            targets[api.name if number == 1 else f"{api.name}-{number}"] = [endpoint]
    targets.update(workers)
    return targets


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class Prometheus(ManagedServer):
    """Debian's `prometheus` on 127.0.0.1 with a generated configuration."""

    name = "prometheus"
    port_env = "PROMETHEUS_PORT"

    def __init__(self, data_dir: Path | str, config_path: Path, port: int = PROMETHEUS_PORT):
        super().__init__(data_dir, port)
        self.config_path = config_path

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
        return [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.storage_dir}",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--storage.tsdb.retention.time=2d",
            "--log.level=warn",
        ]

    def probe(self) -> bool:
        return answers_200(f"{self.url}/-/ready")


def write_config(targets: Mapping[str, list[tuple[str, int]]], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(local_scrape_config(dict(targets), REPO_ROOT))
    return path
