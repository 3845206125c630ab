"""Prometheus' scrape configuration, generated from the processes the project has
(standard library only: `cqrs generate` runs before there is a venv).

Every process serves `/metrics` (docs/metrics.md): an API on its own port, a relay or a
Faust worker on its `HEALTH_PORT`. Two variants:

- compose (`devstack/compose/prometheus/prometheus.yml`, written by `cqrs generate` from
  the services): a job per process, its containers found by their service name (DNS:
  every replica of a relay is scraped), the workers on port 9100;
- local (`cqrs run`, `var/prometheus/prometheus.yml`): the runner's processes on the
  ports it gave them.

Both load the alert rules of `devstack/compose/prometheus/alerts.yml` and label every
series with its `service` and `process` (`orders`, `relay`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.services import QUERY_API_PORT, Service

PROMETHEUS_DIR = "devstack/compose/prometheus"
SCRAPE_CONFIG = f"{PROMETHEUS_DIR}/prometheus.yml"
ALERT_RULES = f"{PROMETHEUS_DIR}/alerts.yml"
WORKER_PORT = 9100
"""The relays' and workers' HEALTH_PORT in compose."""
SCRAPE_INTERVAL = "5s"


@dataclass(frozen=True)
class Job:
    """One process kind: its name (`orders-relay`), its service and kind, and where."""

    name: str
    service: str
    process: str
    targets: tuple[str, ...] = ()
    """`host:port` of each process (local)."""
    dns_name: str = ""
    port: int = 0
    """compose: the service name whose every container is scraped on `port`."""


def compose_jobs(services: Sequence[Service]) -> list[Job]:
    """A job per process of docker-compose.yml, in its order."""
    jobs = []
    for service in services:
        for process in service.processes:
            name = f"{service.name}-{process}"
            port = service.api_port if process == "api" else WORKER_PORT
            jobs.append(Job(name, service.name, process, dns_name=name, port=port or 0))
    jobs.append(
        Job("projections", "read-side", "projections", dns_name="projections", port=WORKER_PORT)
    )
    jobs.append(Job("query-api", "read-side", "api", dns_name="query-api", port=QUERY_API_PORT))
    return jobs


def scrape_config(jobs: Iterable[Job], rule_files: Sequence[str], header: str = "") -> str:
    """The whole configuration as YAML text."""
    lines = [header.rstrip("\n")] if header else []
    lines += [
        "global:",
        f"  scrape_interval: {SCRAPE_INTERVAL}",
        f"  evaluation_interval: {SCRAPE_INTERVAL}",
        "rule_files:",
        *(f"  - {_quoted(path)}" for path in rule_files),
        "scrape_configs:",
    ]
    for job in jobs:
        lines += [f"  - job_name: {_quoted(job.name)}", "    metrics_path: /metrics"]
        if job.dns_name:
            lines += [
                "    dns_sd_configs:",
                f"      - names: [{_quoted(job.dns_name)}]",
                "        type: A",
                f"        port: {job.port}",
            ]
        else:
            targets = ", ".join(_quoted(target) for target in job.targets)
            lines += ["    static_configs:", f"      - targets: [{targets}]"]
        lines += [
            "    relabel_configs:",
            "      - target_label: service",
            f"        replacement: {_quoted(job.service)}",
            "      - target_label: process",
            f"        replacement: {_quoted(job.process)}",
        ]
    return "\n".join(lines) + "\n"


def compose_scrape_config(services: Sequence[Service], header: str) -> str:
    """`devstack/compose/prometheus/prometheus.yml`: the rules beside it (the compose
    file mounts both in /etc/prometheus)."""
    return scrape_config(compose_jobs(services), ["alerts.yml"], header)


def local_jobs(processes: dict[str, list[tuple[str, int]]]) -> list[Job]:
    """A job per process name of the runner's Procfile (`orders-relay`, `orders-relay-2`,
    `orders-api-2`: the copies as their own jobs), with its endpoints."""
    jobs = []
    for name, endpoints in processes.items():
        base = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
        service, _, process = base.rpartition("-")
        if not service:  # projections
            service, process = "read-side", base
        elif service == "query":
            service = "read-side"
        targets = tuple(f"{host}:{port}" for host, port in endpoints)
        jobs.append(Job(name, service, process, targets=targets))
    return jobs


def local_scrape_config(processes: dict[str, list[tuple[str, int]]], root: Path) -> str:
    header = "# Written by `cqrs run` for this run's processes (devstack/scrape.py)."
    return scrape_config(local_jobs(processes), [str(root / ALERT_RULES)], header)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
