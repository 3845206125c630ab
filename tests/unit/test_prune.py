"""`cqrs remove-reference-saga` on a scratch project: the saga's files go, the generated
files are written again, and no other file changes."""

from pathlib import Path

import pytest

from devstack.cli import main
from devstack.servers import REPO_ROOT
from scaffold.generated import GENERATED, generated_files
from scaffold.prune import saga_files

SAGA_SERVICE = "write_side/orders"


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def write(root: Path, relative: str, text: str = "x = 1\n") -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The saga's orders service beside a project's own shipments service."""
    shared = (REPO_ROOT / "devstack" / "compose" / "shared.yml").read_text()
    write(tmp_path, "devstack/compose/shared.yml", shared)
    for service, port in (("orders", 8000), ("shipments", 8002)):
        write(tmp_path, f"write_side/{service}/__init__.py", "")
        write(tmp_path, f"write_side/{service}/api.py")
        write(tmp_path, f"write_side/{service}/relay.py")
        write(tmp_path, f"write_side/{service}/settings.py", f"API_PORT = {port}\n")
        write(tmp_path, f"contracts/{service}.py", f'TOPIC = "{service}"\n')
        write(tmp_path, f"projections/{service}.py")
        write(tmp_path, f"read_side/{service}.py")
        write(tmp_path, f"contracts/schemas/{service}.Created/1.0.json", "{}\n")
    write(tmp_path, "projections/tickets.py")
    write(tmp_path, "read_side/reference_saga.py")
    write(tmp_path, "tests/reference_saga/unit/test_order.py")
    write(tmp_path, "tests/unit/test_shipment.py")
    write(tmp_path, "devstack/demo.py")
    write(tmp_path, "docs/reference-saga.md", "# The saga\n")
    benchmarks = {  # the runner, the saga's scenarios and helpers, a scenario of the project's
        "bench/__init__.py": "",
        "bench/__main__.py": "from bench.runner import main\n",
        "bench/runner.py": "from bench import scenarios, stats\n",
        "bench/stats.py": "",  # the runner's, used by the saga too
        "bench/scenarios/__init__.py": "",
        "bench/capacity.py": "from write_side.orders import api\n",  # imports the saga
        "bench/scenarios/orders_load.py": "from bench import capacity, stats\n",  # through it
        "bench/scenarios/orders_end_to_end.py": (  # names the saga's process
            'from bench.examples import ITEMS\nAPP = "write_side.orders.api:create_app"\n'
        ),
        "bench/examples.py": "ITEMS = 3\n",  # only the saga's scenarios use it
        "bench/scenarios/shipments_load.py": "from bench import stats\nfrom write_side.shipments import api\n",
        "bench/chaos/__init__.py": '"""The saga under load while processes are killed."""\n',
        "bench/chaos/__main__.py": "from .cli import main\n",
        "bench/chaos/cli.py": "from bench.chaos import rounds\n",
        "bench/chaos/rounds.py": "from ..capacity import run\n",
    }
    for relative, text in benchmarks.items():
        write(tmp_path, relative, text)
    lock = '{\n  "orders.Created": {},\n  "shipments.Created": {}\n}\n'
    write(tmp_path, "contracts/schemas/schemas.lock", lock)
    for relative, text in generated_files(tmp_path).items():
        write(tmp_path, relative, text)
    return tmp_path


SAGA_FILES = [
    "write_side/orders",
    "contracts/orders.py",
    "projections/orders.py",
    "read_side/orders.py",
    "projections/tickets.py",
    "read_side/reference_saga.py",
    "tests/reference_saga",
    "devstack/demo.py",
    "contracts/schemas/orders.Created",
    "bench/chaos",
    "bench/capacity.py",
    "bench/examples.py",
    "bench/scenarios/orders_end_to_end.py",
    "bench/scenarios/orders_load.py",
]


def test_the_saga_is_its_files(root: Path) -> None:
    assert saga_files(root) == SAGA_FILES


def test_removing_it_removes_its_files_and_regenerates_the_generated_ones(
    root: Path, capsys
) -> None:
    before = snapshot(root)

    assert main(["remove-reference-saga", "--root", str(root)]) == 0

    after = snapshot(root)
    removed = set(before) - set(after)
    assert all(
        any(path == gone or path.startswith(f"{gone}/") for gone in SAGA_FILES) for path in removed
    )
    assert not any(path.startswith(SAGA_SERVICE) for path in after)
    touched = {path for path in after if after[path] != before[path]}
    assert touched == {*GENERATED, "contracts/schemas/schemas.lock"}
    procfile = (root / "Procfile").read_text()
    assert "orders" not in procfile and "demo" not in procfile
    assert "shipments-api:" in procfile
    assert "orders" not in (root / "docker-compose.yml").read_text()
    sql = (root / "devstack" / "postgres" / "create-service-databases.sql").read_text()
    assert "orders" not in sql and "CREATE DATABASE shipments;" in sql
    assert "orders" not in (root / "contracts" / "schemas" / "schemas.lock").read_text()
    assert "docs/reference-saga.md" in after  # the guides link it
    assert "remove write_side/orders" in capsys.readouterr().out


def test_a_dry_run_changes_nothing(root: Path, capsys) -> None:
    before = snapshot(root)

    assert main(["remove-reference-saga", "--dry-run", "--root", str(root)]) == 0

    assert snapshot(root) == before
    assert "remove tests/reference_saga" in capsys.readouterr().out


def test_a_project_without_the_saga_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["remove-reference-saga", "--root", str(tmp_path)]) == 2
    assert "has no reference saga" in capsys.readouterr().out
