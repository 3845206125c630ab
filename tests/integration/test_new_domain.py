"""`cqrs new-domain` in a copy of the repository: the generated code passes the project's
checks with no edit, and its generated tests pass, the end-to-end one included (the
domain's command API, relay, the projections worker and the query API running on a
broker and a MongoDB-wire server: a command is read back through the query API).

Subprocesses run in the copy with PYTHONPATH pointing at it (the venv's editable
install points at this tree, which has no such domain).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from devstack.servers import REPO_ROOT, SECANTUS_VENV

GENERATED = [
    "write_side/shipments",
    "contracts/shipments.py",
    "projections/shipments.py",
    "read_side/shipments.py",
    "tests/unit/test_shipment.py",
    "tests/e2e/test_shipments_flow.py",
]
EDITED = ["contracts/registry.py", "devstack/run.py", "projections/worker.py", "read_side/api.py"]


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


def test_a_generated_domain_passes_the_checks_and_its_tests_end_to_end(tmp_path: Path) -> None:
    copy = repository_copy(tmp_path / "repo")
    started = time.monotonic()

    generated = run_in(
        copy,
        *("-m", "devstack", "new-domain", "shipments", "--aggregate", "Shipment"),
        *("--field", "title:str", "--field", "weight_kg:float"),
        *("--field", "parcels:int", "--field", "express:bool"),
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert all((copy / path).exists() for path in GENERATED)
    assert sorted(p.name for p in (copy / "contracts" / "schemas" / "shipments").iterdir()) == [
        "ShipmentClosed.v1.json",
        "ShipmentCreated.v1.json",
    ]

    for check in (["check"], ["format", "--check"]):
        result = run_in(copy, "-m", "ruff", *check, *GENERATED, *EDITED)
        assert result.returncode == 0, result.stdout + result.stderr
    typed = run_in(copy, "-m", "mypy")
    assert typed.returncode == 0, typed.stdout + typed.stderr
    for text in (copy / path for path in GENERATED if path.endswith(".py")):
        assert "{{" not in text.read_text() and "TODO" not in text.read_text()

    tests = run_in(
        copy,
        *("-m", "pytest", "-q", "-p", "no:cacheprovider"),
        *("tests/unit/test_shipment.py", "tests/e2e/test_shipments_flow.py"),
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    print(f"new-domain → generated tests passed in {time.monotonic() - started:.1f} s")
