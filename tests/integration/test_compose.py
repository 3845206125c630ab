"""docker-compose.yml is valid and uses the same settings names as the local runner."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from devstack.run import default_environment
from devstack.servers import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROCFILE = REPO_ROOT / "Procfile"


def docker_compose() -> str:
    """The docker-compose executable; fail under CI (it must be installed), else skip."""
    path = shutil.which("docker-compose")
    if path is None:
        reason = "docker-compose is not installed (apt-get install docker-compose)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_file_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_has_the_servers_and_every_process() -> None:
    result = compose("config", "--services")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    processes = {line.split(":", 1)[0] for line in PROCFILE.read_text().splitlines() if line}
    expected = {"postgres", "kafka", "mongo"} | (processes - {"demo"})
    assert expected <= services, f"missing services: {sorted(expected - services)}"


def test_every_setting_name_is_in_the_compose_file() -> None:
    compose_text = COMPOSE_FILE.read_text()
    names = set(default_environment({}))
    names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", PROCFILE.read_text()))
    missing = sorted(name for name in names if not re.search(rf"\b{name}\b", compose_text))
    assert missing == [], f"set in the local runner but not in docker-compose.yml: {missing}"
