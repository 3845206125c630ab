"""The generator refuses bad names, never overwrites, and leaves nothing behind on failure.

Runs on a scratch root holding the files a generation edits (no server, no subprocess).
"""

import re
import shutil
from pathlib import Path

import pytest

from devstack.cli import main
from devstack.servers import REPO_ROOT
from scaffold import changes, generate, names

EDITED = (
    "contracts/registry.py",
    "devstack/run.py",
    "projections/registry.py",
    "read_side/api.py",
    "Procfile",
    "docker-compose.yml",
    "devstack/postgres/create-service-databases.sql",
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for relative in EDITED:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / relative, tmp_path / relative)
    for package in ("write_side/orders", "projections"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Shipments", "lower snake case"),
        ("ship-ments", "lower snake case"),
        ("2shipments", "lower snake case"),
        ("class", "keyword"),
        ("list", "builtin"),
        ("kernel", "already uses"),
        ("query", "already uses"),
    ],
)
def test_a_bad_domain_name_is_refused(name: str, why: str) -> None:
    with pytest.raises(names.InvalidName, match=why):
        names.domain_name(name)


@pytest.mark.parametrize(
    ("specs", "why"),
    [
        (["title"], "name:type"),
        (["title:text"], "name:type"),
        (["Title:str"], "snake case"),
        (["for:int"], "keyword"),
        (["version:int"], "reserved"),
        (["shipment_id:str"], "reserved"),
        (["title:str", "title:int"], "twice"),
    ],
)
def test_a_bad_field_is_refused(specs: list[str], why: str) -> None:
    with pytest.raises(names.InvalidName, match=why):
        names.parse_fields(specs, taken=frozenset({"shipment_id"}))


def test_fields_parse_into_names_types_and_examples() -> None:
    fields = names.parse_fields(["title:str", "amount:int", "express:bool", "weight:float"])
    assert [(f.name, f.type, f.example) for f in fields] == [
        ("title", "str", '"title-1"'),
        ("amount", "int", "1"),
        ("express", "bool", "True"),
        ("weight", "float", "1.5"),
    ]


def test_an_existing_domain_is_refused_and_nothing_changes(root: Path, capsys) -> None:
    before = snapshot(root)

    code = main(["new-domain", "orders", "--field", "title:str", "--root", str(root)])

    assert code == 2
    assert "exists already" in capsys.readouterr().out
    assert snapshot(root) == before


def test_dry_run_prints_every_change_and_changes_nothing(root: Path, capsys) -> None:
    before = snapshot(root)

    code = main(
        ["new-domain", "shipments", "--field", "title:str", "--dry-run", "--root", str(root)]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "create write_side/shipments/domain.py" in out
    assert "create tests/e2e/test_shipments_flow.py" in out
    assert "+ SHIPMENTS," in out
    assert "dry run: nothing was changed" in out
    assert snapshot(root) == before


def test_a_domain_needs_a_field_and_nothing_changes(root: Path, capsys) -> None:
    before = snapshot(root)

    code = main(["new-domain", "audits", "--root", str(root)])

    assert code == 2
    assert "at least one field" in capsys.readouterr().out
    assert snapshot(root) == before


def test_an_existing_file_is_never_overwritten(root: Path) -> None:
    planned = generate.new_domain(root, "shipments", None, ["title:str"])
    (root / "read_side").mkdir(exist_ok=True)
    (root / "read_side" / "shipments.py").write_text("mine\n")
    before = snapshot(root)

    with pytest.raises(changes.ScaffoldError, match="read_side/shipments.py"):
        changes.apply(root, planned)

    assert snapshot(root) == before


def test_a_missing_insertion_point_is_refused_before_anything_is_written(root: Path) -> None:
    planned = generate.new_domain(root, "shipments", None, ["title:str"])
    registry = root / "projections" / "registry.py"
    registry.write_text(registry.read_text().replace("# cqrs-scaffold: projections\n", ""))
    before = snapshot(root)

    with pytest.raises(changes.ScaffoldError, match="projections/registry.py"):
        changes.apply(root, planned)

    assert snapshot(root) == before


def test_a_failure_half_way_restores_every_file_and_removes_the_new_ones(root: Path) -> None:
    planned = generate.new_domain(root, "shipments", None, ["title:str"])

    def writes_then_fails(step_root: Path, transaction: changes.Transaction) -> None:
        with transaction.watching(step_root / "contracts" / "schemas"):
            (step_root / "contracts" / "schemas" / "shipments").mkdir(parents=True)
            (step_root / "contracts" / "schemas" / "shipments" / "x.json").write_text("{}")
        raise RuntimeError("injected failure")

    planned.after = [writes_then_fails]
    before = snapshot(root)
    directories = {p for p in root.rglob("*") if p.is_dir()}

    with pytest.raises(RuntimeError, match="injected"):
        changes.apply(root, planned)

    assert snapshot(root) == before
    assert {p for p in root.rglob("*") if p.is_dir()} == directories


def test_entries_go_above_their_marker_with_its_indentation(root: Path) -> None:
    planned = generate.new_domain(root, "shipments", None, ["title:str"])
    planned.after = []

    changes.apply(root, planned)

    registry = (root / "contracts" / "registry.py").read_text()
    assert "\n    shipments,\n    # cqrs-scaffold: service contracts\n" in registry
    assert (
        (root / "Procfile")
        .read_text()
        .endswith("shipments-relay: exec python -m write_side.shipments.relay\n")
    )
    ports = re.findall(r'_API_PORT": "(\d+)"', (REPO_ROOT / "devstack" / "run.py").read_text())
    following = max(int(port) for port in ports) + 1  # 8005 in the template
    assert f'"SHIPMENTS_API_PORT": "{following}",' in (root / "devstack" / "run.py").read_text()
