"""The write-side services, found from their files (standard library only).

A service is a package `write_side/<name>/`. Its processes are the modules it has:
`api.py` (the command API, `<NAME>_API_PORT`), `relay.py`, `saga.py`. Its API's port is
the `API_PORT` its own `settings.py` assigns, so that a port never moves when another
domain comes or goes; `cqrs new-domain` gives a new domain the next free one. A
`COMPOSE_ENVIRONMENT` dict there adds settings to its processes in docker-compose.yml. The local
runner (`devstack/run.py`) and the generated files (`scaffold/generated.py`: the Procfile,
docker-compose.yml, the PostgreSQL init script) read the services from here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
QUERY_API_PORT = 8001
"""The query API's port (read_side/)."""
PROCESSES = ("api", "relay", "saga")
"""The modules of a service that run as processes, in the order they are listed."""


class ServiceLayoutError(ValueError):
    """A service's files do not say what its processes need (an API without a port)."""


@dataclass(frozen=True)
class Service:
    name: str
    processes: tuple[str, ...]
    """Those of `PROCESSES` whose module the package has."""
    api_port: int | None
    """The default port of its command API (None without an api.py)."""
    compose_environment: tuple[tuple[str, str], ...] = ()
    """Settings its processes get in docker-compose.yml besides its store's."""

    @property
    def port_var(self) -> str:
        return f"{self.name.upper()}_API_PORT"


def assigned(settings: Path, name: str) -> object:
    """The literal ``settings.py`` assigns to ``name`` at its top level (None if none)."""
    if not settings.is_file():
        return None
    for node in ast.parse(settings.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(target, ast.Name) and target.id == name for target in targets):
                return ast.literal_eval(node.value)
    return None


def api_port(settings: Path) -> int | None:
    """The integer ``settings.py`` assigns to ``API_PORT``."""
    port = assigned(settings, "API_PORT")
    return port if isinstance(port, int) else None


def find_services(root: Path = REPO_ROOT) -> list[Service]:
    """Every package of ``root/write_side``, by name."""
    write_side = root / "write_side"
    found = []
    for package in sorted(write_side.iterdir()) if write_side.is_dir() else ():
        if not (package / "__init__.py").is_file():
            continue
        processes = tuple(p for p in PROCESSES if (package / f"{p}.py").is_file())
        port = api_port(package / "settings.py")
        if "api" in processes and port is None:
            raise ServiceLayoutError(
                f"write_side/{package.name}/settings.py assigns no API_PORT for its api.py"
            )
        environment = assigned(package / "settings.py", "COMPOSE_ENVIRONMENT") or {}
        if not isinstance(environment, dict):
            raise ServiceLayoutError(f"write_side/{package.name}: COMPOSE_ENVIRONMENT: a dict")
        found.append(
            Service(
                package.name,
                processes,
                port if "api" in processes else None,
                tuple((str(k), str(v)) for k, v in environment.items()),
            )
        )
    return found


def api_ports(root: Path = REPO_ROOT) -> dict[str, int]:
    """`<NAME>_API_PORT` → its default, for the query API and every service's API."""
    ports = {"QUERY_API_PORT": QUERY_API_PORT}
    for service in find_services(root):
        if service.api_port is not None:
            ports[service.port_var] = service.api_port
    return ports
