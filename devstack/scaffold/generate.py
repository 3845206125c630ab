"""What each generator command adds to a repository, as `Changes`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.scaffold import names
from devstack.scaffold.changes import Changes, ScaffoldError, Step, Transaction

Planner = Callable[[Path], Changes]

TEMPLATES = Path(__file__).parent / "templates"
FIRST_API_PORT = 8000


def render(template: str, answers: dict[str, Any]) -> dict[str, str]:
    """Render ``templates/<template>`` with copier into a scratch directory: path → text."""
    import copier  # dev tooling only: the service images do not install it

    with tempfile.TemporaryDirectory(prefix="cqrs-scaffold-") as scratch:
        copier.run_copy(
            str(TEMPLATES / template),
            scratch,
            data=answers,
            defaults=True,
            quiet=True,
            overwrite=True,
        )
        return {
            str(path.relative_to(scratch)): path.read_text()
            for path in sorted(Path(scratch).rglob("*"))
            if path.is_file()
        }


def _run(root: Path, *argv: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ScaffoldError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


def write_contract_schemas(service: str) -> Step:
    """The step that writes (or rewrites) the service's committed contract schemas."""

    def step(root: Path, transaction: Transaction) -> None:
        with transaction.watching(root / "contracts" / "schemas"):
            _run(root, "-m", "devstack.scaffold.schemas", service)

    return step


def format_python(root: Path, transaction: Transaction) -> None:
    """The project's import sorting and formatter over every Python file written or edited.

    An entry inserted into an import block is sorted into place; nothing else in an
    edited file moves (it was formatted already).
    """
    touched = [p for p in [*transaction.created, *transaction.originals] if p.suffix == ".py"]
    paths = [str(path) for path in touched if path.is_file()]
    if paths:
        _run(root, "-m", "ruff", "check", "--quiet", "--select", "I", "--fix", *paths)
        _run(root, "-m", "ruff", "format", "--quiet", *paths)


def require_project(root: Path) -> None:
    if not all((root / part).is_dir() for part in ("write_side", "contracts", "projections")):
        raise ScaffoldError(f"{root} is not a project made from this template (run it at its root)")


def next_api_port(root: Path) -> int:
    ports = re.findall(r'_API_PORT": "(\d+)"', (root / "devstack" / "run.py").read_text())
    return max((int(port) for port in ports), default=FIRST_API_PORT - 1) + 1


def new_domain(root: Path, domain: str, aggregate: str | None, field_specs: list[str]) -> Changes:
    require_project(root)
    domain = names.domain_name(domain)
    aggregate = names.class_name(
        aggregate or names.camel_case(domain.removesuffix("s")), "aggregate"
    )
    aggregate_var = names.snake_case(aggregate)
    if (root / "write_side" / domain).exists() or (root / "contracts" / f"{domain}.py").exists():
        raise ScaffoldError(f"domain {domain!r} exists already; nothing was changed")
    fields = names.parse_fields(field_specs, taken=frozenset({f"{aggregate_var}_id"}))
    port = next_api_port(root)
    upper, constant = domain.upper(), domain.upper()
    changes = Changes(
        files=render(
            "domain",
            {
                "domain": domain,
                "service_class": names.camel_case(domain),
                "aggregate": aggregate,
                "aggregate_var": aggregate_var,
                "api_port": port,
                "fields": [field.as_answer() for field in fields],
            },
        )
    )
    changes.insert("contracts/registry.py", f"from contracts import {domain}", "contract imports")
    changes.insert("contracts/registry.py", f"{domain},", "service contracts")
    changes.insert("devstack/run.py", f'"{upper}_API_PORT": "{port}",', "api ports")
    changes.insert(
        "projections/worker.py",
        f"from projections.{domain} import {constant}",
        "projection imports",
    )
    changes.insert("projections/worker.py", f"register({constant})", "projections")
    changes.insert(
        "read_side/api.py",
        f"from read_side import {domain} as {domain}_routes",
        "read model imports",
    )
    changes.insert(
        "read_side/api.py", f"app.include_router({domain}_routes.router)", "read model routers"
    )
    changes.insert(
        "Procfile",
        f"{domain}-api: exec uvicorn write_side.{domain}.api:create_app --factory "
        f"--host 127.0.0.1 --port ${upper}_API_PORT\n"
        f"{domain}-relay: exec python -m write_side.{domain}.relay",
    )
    changes.insert("docker-compose.yml", compose_services(domain, port), "services")
    changes.insert("devstack/postgres/create-service-databases.sql", f"CREATE DATABASE {domain};")
    changes.insert(
        "README.md",
        f"- **{domain}** (`write_side/{domain}/`, `contracts/{domain}.py`): the `{aggregate}` "
        f"aggregate; command API on port {port} (`POST /{domain}`, "
        f"`POST /{domain}/{{{aggregate_var}_id}}/close`), read model `GET /{domain}` on the "
        "query API.",
        "domains",
    )
    changes.after += [write_contract_schemas(domain), format_python]
    return changes


def compose_services(domain: str, port: int) -> str:
    upper = domain.upper()
    title = f"# {'-' * (78 - len(domain))} {domain}"
    return f"""{title}
{domain}-api:
  <<: *app
  environment: &{domain}-environment
    <<: *service-environment
    {upper}_DATABASE_URL: postgresql+psycopg://postgres:postgres@postgres:5432/{domain}
    {upper}_DATABASE_SCHEMA: ""
  command: ["uvicorn", "write_side.{domain}.api:create_app", "--factory", "--host", "0.0.0.0", "--port", "{port}"]
  ports:
    - "${{{upper}_API_PORT:-{port}}}:{port}"
  depends_on:
    postgres:
      condition: service_healthy
  healthcheck:
    test: ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=3)"]
    interval: 5s
    timeout: 5s
    retries: 20
    start_period: 5s

{domain}-relay:
  <<: *app
  environment: *{domain}-environment
  command: ["python", "-m", "write_side.{domain}.relay"]
  depends_on:
    <<: *after-api
    {domain}-api:
      condition: service_healthy

"""
