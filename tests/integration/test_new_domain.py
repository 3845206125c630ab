"""`cqrs new-domain` in a copy of the repository: the generated code passes the project's
checks with no edit, and its generated tests pass, the end-to-end one included (the
domain's command API, relay, the projections worker and the query API running on a
broker and a MongoDB-wire server: a command is read back through the query API).

Subprocesses run in the copy with PYTHONPATH pointing at it (the venv's editable
install points at this tree, which has no such domain).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.servers import REPO_ROOT, SECANTUS_VENV

GENERATED = [
    "write_side/shipments",
    "contracts/shipments.py",
    "projections/shipments.py",
    "read_side/shipments.py",
    "tests/unit/test_shipment.py",
    "tests/e2e/test_shipments_flow.py",
]
REGENERATED = {
    "Procfile",
    "docker-compose.yml",
    "devstack/postgres/create-service-databases.sql",
    "devstack/compose/prometheus/prometheus.yml",
    "contracts/schemas/schemas.lock",
}
"""What `cqrs generate` and `cqrs contracts generate` write: no hand-written file changes."""


DOMAINS = ("shipments", "parcels", "invoices")
"""The domains the test generates: a project with one of its own skips it (the generator
refuses a domain that exists)."""
OWN = [name for name in DOMAINS if (REPO_ROOT / "write_side" / name).exists()]

pytestmark = pytest.mark.skipif(
    bool(OWN), reason=f"the project has its own {', '.join(OWN)}: the generator would refuse it"
)


def repository_copy(destination: Path) -> Path:
    """The repository's files (tracked and new, not ignored) in ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = REPO_ROOT / relative
        if source.is_file() and not source.is_symlink():
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            (destination / relative).write_bytes(source.read_bytes())
    (destination / SECANTUS_VENV.name).symlink_to(SECANTUS_VENV)
    # mypy's cache, if `make lint` left one: the check then redoes only what changed,
    # as it would in the repository itself.
    if (REPO_ROOT / ".mypy_cache").is_dir():
        shutil.copytree(REPO_ROOT / ".mypy_cache", destination / ".mypy_cache")
    return destination


def run_in(copy: Path, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=copy,
        env={**os.environ, "PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def snapshot(copy: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(copy)): path.read_bytes()
        for path in copy.rglob("*")
        if path.is_file() and ".mypy_cache" not in path.parts and "__pycache__" not in path.parts
    }


def compose_services(copy: Path) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((copy / "docker-compose.yml").read_text())["services"]
    return services


def test_generated_domains_events_projections_and_reactions_pass_the_checks_and_their_tests(
    tmp_path: Path,
) -> None:
    """One copy, every generator: the checks and the tests run once over all of it."""
    copy = repository_copy(tmp_path / "repo")
    started = time.monotonic()
    before = snapshot(copy)
    generated = run_in(
        copy,
        *("-m", "devstack", "new-domain", "shipments", "--aggregate", "Shipment"),
        *("--field", "restaurant_id:str", "--field", "total_cents:int"),
        *("--field", "weight_kg:float", "--field", "express:bool"),
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert all((copy / path).exists() for path in GENERATED)
    after = snapshot(copy)
    touched = {path for path, content in before.items() if after[path] != content}
    assert touched <= REGENERATED, f"new-domain edited {sorted(touched - REGENERATED)}"
    assert "shipments-api: exec uvicorn" in (copy / "Procfile").read_text()
    schemas = copy / "contracts" / "schemas"
    assert (schemas / "shipments.ShipmentCreated" / "1.0.json").exists()
    assert (schemas / "shipments.ShipmentClosed" / "1.0.json").exists()

    fields = ["--field", "restaurant_id:str", "--field", "total_cents:int"]
    commands = [
        ["new-domain", "parcels", *fields],
        ["new-domain", "invoices", *fields],
        ["new-event", "shipments", "ShipmentDispatched", "--field", "carrier:str"],
        ["new-event", "shipments", "ShipmentDelayed", "--command", "delay"],
        ["new-projection", "shipments", "shipment_history"],
        ["new-reaction", "invoices", "--on", "shipments.ShipmentCreated"],
        ["new-reaction", "invoices", "--on", "parcels.ParcelCreated"],
    ]
    for command in commands:
        result = run_in(copy, "-m", "devstack", *command)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    refused = run_in(
        copy, "-m", "devstack", "new-reaction", "invoices", "--on", "shipments.ShipmentClosed"
    )
    assert refused.returncode == 2
    assert "has no restaurant_id, total_cents" in refused.stdout
    generated_current = run_in(copy, "-m", "devstack", "generate", "--check")
    assert generated_current.returncode == 0, generated_current.stdout
    added = [
        *GENERATED,
        "write_side/parcels",
        "write_side/invoices",
        "contracts/parcels.py",
        "contracts/invoices.py",
        "projections",
        "tests/unit/test_shipment_dispatched.py",
        "tests/unit/test_shipment_delayed.py",
        "tests/unit/test_shipment_history_projection.py",
        "tests/unit/test_invoices_on_shipment_created.py",
        "tests/unit/test_invoices_on_parcel_created.py",
    ]
    more_tests = ["tests/integration/test_compose.py", "tests/unit/test_service_boundaries.py"]
    checks_and_tests(copy, added, more_tests)
    print(f"the generators → their tests passed in {time.monotonic() - started:.1f} s")
    assert (schemas / "shipments.ShipmentDelayed" / "1.0.json").exists()

    services = compose_services(copy)
    api, relay = services["shipments-api"], services["shipments-relay"]
    assert api["environment"]["SHIPMENTS_DATABASE_URL"].endswith("/shipments")
    # the API's auth besides; the relay's health and metrics server (docs/metrics.md)
    health = ("HEALTH_", "METRICS_")
    shared = {k: v for k, v in relay["environment"].items() if not k.startswith(health)}
    assert shared.items() <= api["environment"].items()
    assert relay["environment"]["HEALTH_PORT"] == "9100"
    assert "KAFKA_BOOTSTRAP_SERVERS" in api["environment"]
    assert relay["command"] == ["python", "-m", "write_side.shipments.relay"]
    saga = services["invoices-saga"]
    assert saga["command"][:3] == ["faust", "-A", "write_side.invoices.saga:app"]
    assert (
        "invoices-saga: exec faust -A write_side.invoices.saga:app"
        in (copy / "Procfile").read_text()
    )
    worker = run_in(
        copy,
        "-c",
        "from write_side.invoices.saga import app; [agent] = app.agents.values(); "
        "print(sorted(agent.channel.topics))",
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert worker.stdout.strip().splitlines()[-1] == "['parcels', 'shipments']"

    # The project's schemathesis test fails on an answer the OpenAPI does not list: a
    # malformed consistency token's 400 included.
    answers = run_in(
        copy,
        "-c",
        "import json; from read_side.api import create_app; spec = create_app().openapi(); "
        "print(json.dumps({path: sorted(spec['paths'][path]['get']['responses']) "
        "for path in spec['paths'] if path.startswith('/shipments')}))",
    )
    assert answers.returncode == 0, answers.stdout + answers.stderr
    documented = json.loads(answers.stdout.strip().splitlines()[-1])
    assert set(documented) == {"/shipments", "/shipments/{shipment_id}"}
    assert all({"200", "400", "503"} <= set(codes) for codes in documented.values()), documented


def checks_and_tests(copy: Path, generated: list[str], more_tests: list[str]) -> None:
    """`make lint`'s checks on what was generated, then its tests (and ``more_tests``)."""
    for check in (["check"], ["format", "--check"]):
        result = run_in(copy, "-m", "ruff", *check, *generated)
        assert result.returncode == 0, result.stdout + result.stderr
    typed = run_in(copy, "-m", "mypy")
    assert typed.returncode == 0, typed.stdout + typed.stderr
    contracts = run_in(copy, "-m", "devstack", "contracts", "check")
    assert contracts.returncode == 0, contracts.stdout + contracts.stderr
    for path in generated:
        for source in [copy / path] if path.endswith(".py") else (copy / path).rglob("*.py"):
            text = source.read_text()
            assert "{{" not in text and "{%" not in text and "TODO" not in text, source

    tests = [path for path in generated if path.startswith("tests/")]
    result = run_in(copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *more_tests)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
