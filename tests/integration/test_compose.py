"""docker-compose.yml is valid, runs every process, and uses the local runner's settings.

The checks read `docker-compose config`'s normalized output (anchors and merges
resolved), so they see what each container really gets.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from functools import cache
from pathlib import Path

from pydantic_settings import BaseSettings

from devstack.run import default_environment
from devstack.servers import REPO_ROOT
from devstack.services import find_services
from tests.support import debian_tool

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROCFILE = REPO_ROOT / "Procfile"
POSTGRES_INIT = REPO_ROOT / "devstack" / "postgres" / "create-service-databases.sql"
SERVERS = {"postgres", "kafka", "mongo"}
SETTINGS_PACKAGES = ("write_side", "projections", "read_side")


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [debian_tool("docker-compose", "docker-compose"), "-f", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@cache
def compose_services() -> dict[str, tuple[str, ...]]:
    """Each service's lines in `docker-compose config` (every `--profile` included)."""
    result = compose("config")
    assert result.returncode == 0, result.stderr
    services: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_services = False
    for line in result.stdout.splitlines():
        if not line.startswith(" "):
            in_services, current = line == "services:", None
        elif in_services and (match := re.fullmatch(r"  ([\w.-]+):", line)):
            current = services.setdefault(match[1], [])
        elif current is not None:
            current.append(line)
    return {name: tuple(lines) for name, lines in services.items()}


def section(lines: tuple[str, ...], key: str) -> list[str]:
    """The lines under a service's `key:` (one level deeper), without indentation."""
    body: list[str] = []
    inside = False
    for line in lines:
        if line == f"    {key}:":
            inside = True
        elif inside and line.startswith(("     ", "    - ")):
            body.append(line.strip())
        elif inside:
            break
    return body


def environment(service: str) -> set[str]:
    return {line.split(":", 1)[0] for line in section(compose_services()[service], "environment")}


def command(service: str) -> list[str]:
    return [line.removeprefix("- ") for line in section(compose_services()[service], "command")]


def procfile() -> dict[str, str]:
    lines = PROCFILE.read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def settings_modules() -> dict[str, str]:
    """`<package path>` → module of each settings.py the processes read."""
    found = {}
    for package in SETTINGS_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("settings.py")):
            relative = path.relative_to(REPO_ROOT).with_suffix("")
            found[str(relative.parent)] = ".".join(relative.parts)
    return found


def setting_names(module_name: str) -> set[str]:
    """The environment names every BaseSettings class of a module reads."""
    module = importlib.import_module(module_name)
    names = set()
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value is not BaseSettings
        ):
            prefix = value.model_config.get("env_prefix", "")
            for field_name, field in value.model_fields.items():
                alias = field.validation_alias if isinstance(field.validation_alias, str) else None
                names.add((alias or f"{prefix}{field_name}").upper())
    return names


def settings_of(process: str) -> str:
    """Where the settings of a Procfile process live (`<d>-relay` → write_side/<d>)."""
    if process == "projections":
        return "projections"
    if process == "query-api":
        return "read_side"
    return f"write_side/{process.rsplit('-', 1)[0]}"


def test_compose_file_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_has_the_servers_and_every_process() -> None:
    result = compose("config", "--services")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    expected = SERVERS | set(procfile())
    assert expected <= services, f"missing services: {sorted(expected - services)}"


def test_each_process_runs_the_procfile_command() -> None:
    for process, line in procfile().items():
        target = re.search(r"(?:-m|-A) ([\w.:]+)|exec uvicorn ([\w.:]+)", line)
        assert target, f"{process}: no module in the Procfile's {line!r}"
        program = line.split()[1]
        args = command(process)
        assert args[:1] == [program], f"{process}: runs {args}, the Procfile {line!r}"
        assert (target[1] or target[2]) in args, f"{process}: runs {args}, the Procfile {line!r}"


def test_every_setting_a_process_reads_is_in_its_environment() -> None:
    modules = settings_modules()
    assert set(modules) >= {
        *(f"write_side/{service.name}" for service in find_services()),
        "projections",
        "read_side",
    }
    for process in set(procfile()) - {"demo"}:
        missing = setting_names(modules[settings_of(process)]) - environment(process)
        assert not missing, f"{process} reads {sorted(missing)}; not in its environment"
    everywhere = set().union(*(environment(name) for name in compose_services()))
    processes = set(procfile()) - {"demo"}
    write_side = any(settings_of(process).startswith("write_side/") for process in processes)
    for where, module in modules.items():
        if where.startswith("write_side/") and not write_side:
            continue  # no write-side service runs yet: a new project before its first domain
        missing = setting_names(module) - everywhere
        assert not missing, f"{where} reads {sorted(missing)}; set nowhere in docker-compose.yml"


def test_a_process_gets_only_its_own_service_store() -> None:
    for process in set(procfile()) - {"demo"}:
        own = settings_of(process).rsplit("/", 1)[-1].upper()
        stores = {name for name in environment(process) if "_DATABASE_" in name}
        assert all(name.startswith(f"{own}_") for name in stores), f"{process}: {stores}"


def test_every_local_runner_name_is_in_the_compose_file() -> None:
    compose_text = COMPOSE_FILE.read_text()
    names = set(default_environment({}))
    names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", PROCFILE.read_text()))
    missing = sorted(name for name in names if not re.search(rf"\b{name}\b", compose_text))
    assert missing == [], f"set in the local runner but not in docker-compose.yml: {missing}"


def test_every_service_database_is_created() -> None:
    created = set(re.findall(r"CREATE DATABASE (\w+);", Path(POSTGRES_INIT).read_text()))
    postgres_env = section(compose_services()["postgres"], "environment")
    created |= {line.split(": ", 1)[1] for line in postgres_env if line.startswith("POSTGRES_DB:")}
    assert any(POSTGRES_INIT.name in line for line in compose_services()["postgres"])
    for process in set(procfile()) - {"demo"}:
        for line in section(compose_services()[process], "environment"):
            if match := re.fullmatch(r"[A-Z]+_DATABASE_URL: postgresql\S*/(\w+)", line):
                assert match[1] in created, f"{process}: database {match[1]} is never created"


def test_apis_have_healthchecks_and_the_others_wait_for_them() -> None:
    services = compose_services()
    apis = {name for name in procfile() if name.endswith("-api")}
    assert "query-api" in apis
    assert apis >= {f"{service.name}-api" for service in find_services() if service.api_port}
    for api in apis:
        assert section(services[api], "healthcheck"), f"{api} has no healthcheck"
    for process in procfile():
        if process.endswith(("-relay", "-saga")):
            api = f"{process.rsplit('-', 1)[0]}-api"
            assert f"{api}:" in section(services[process], "depends_on"), process
    if "demo" not in services:
        return  # a project without a demo
    # The demo waits for every API it calls.
    demo_waits_for = set(section(services["demo"], "depends_on"))
    called = {
        f"{line.split('_API_URL', 1)[0].lower()}-api:"
        for line in section(services["demo"], "environment")
        if "_API_URL:" in line
    }
    assert called >= {f"{api}:" for api in apis}
    assert called <= demo_waits_for
