"""The generator refuses bad names, never overwrites, and leaves nothing behind on failure.

Runs on a scratch root holding the files a generation edits (no server, no subprocess).
"""

from pathlib import Path

import pytest

from devstack.cli import main
from devstack.servers import REPO_ROOT
from scaffold import changes, generate, names
from scaffold.generated import GENERATED, generated_files

COPIED = ("devstack/compose/shared.yml",)
SERVICE = {
    "write_side/__init__.py": "",
    "write_side/parcels/__init__.py": "",
    "write_side/parcels/api.py": "",
    "write_side/parcels/relay.py": "",
    "write_side/parcels/settings.py": "API_PORT = 8000\n",
    "contracts/parcels.py": 'TOPIC = "parcels"\n',
}
"""A scratch project's one service (parcels)."""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A scratch project: one service, the generated files and their source."""
    files = {**SERVICE, **{path: (REPO_ROOT / path).read_text() for path in COPIED}}
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    for relative, text in generated_files(tmp_path).items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    (tmp_path / "projections").mkdir()
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

    code = main(["new-domain", "parcels", "--field", "title:str", "--root", str(root)])

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
    assert "edit " not in out  # a new domain is new files only
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


def test_a_missing_place_is_refused_before_anything_is_written(root: Path) -> None:
    new_domain = generate.new_domain(root, "shipments", None, ["title:str"])
    new_domain.after = []
    changes.apply(root, new_domain)
    contract = root / "contracts" / "shipments.py"
    contract.write_text(contract.read_text().replace("EVENTS:", "ALL_EVENTS:"))
    before = snapshot(root)

    with pytest.raises(changes.ScaffoldError, match="contracts/shipments.py: no EVENTS"):
        changes.apply(root, generate.new_event(root, "shipments", "Dispatched", [], None))

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


def test_a_new_domain_touches_no_existing_file_but_the_generated_ones(root: Path) -> None:
    planned = generate.new_domain(root, "shipments", None, ["title:str"])
    planned.after = [generate.write_generated_files]
    before = snapshot(root)

    changes.apply(root, planned)

    after = snapshot(root)
    touched = {path for path, content in before.items() if after[path] != content}
    assert touched == set(GENERATED)
    assert all((root / path).read_text() == text for path, text in generated_files(root).items())
    procfile = (root / "Procfile").read_text()
    assert "shipments-api: exec uvicorn write_side.shipments.api:create_app" in procfile
    assert "shipments-relay: exec python -m write_side.shipments.relay\n" in procfile
    assert "  shipments-api:\n" in (root / "docker-compose.yml").read_text()
    sql = (root / "devstack" / "postgres" / "create-service-databases.sql").read_text()
    assert "CREATE DATABASE shipments;" in sql


def test_a_new_domain_gets_the_port_after_every_other(root: Path) -> None:
    planned = generate.new_domain(root, "shipments", None, ["title:str"])

    settings = planned.files["write_side/shipments/settings.py"]

    assert "\nAPI_PORT = 8002\n" in settings  # above parcels' 8000 and the query API's 8001


SOURCE = """import os

EVENTS = (
    A,
    B,
)
TOPICS = []
REACTIONS = ()
to_contract = mapping({A: a})


class Thing:
    x: int

    def close(self) -> None:
        pass


def apply(event):
    if event == 1:
        x = 1
    elif event == 2:
        x = 2
    return x
"""


@pytest.mark.parametrize(
    ("place", "text", "expected"),
    [
        (changes.Place("after-imports"), "import re", "import os\n\nimport re\n"),
        (changes.Place("before", "EVENTS"), "C = 3", "\nC = 3\n\nEVENTS = ("),
        (changes.Place("item-of", "EVENTS"), "C", "    B,\nC,\n)"),
        (changes.Place("item-of", "TOPICS"), "t", "TOPICS = [\nt,\n]"),
        (changes.Place("item-of", "REACTIONS"), "r", "REACTIONS = (\nr,\n)"),
        (changes.Place("item-of", "to_contract:0"), "B: b", "{A: a,\nB: b}"),
        (changes.Place("end-of", "Thing"), "y: int", "        pass\n\n    y: int\n"),
        (changes.Place("end-of", "Thing.close"), "return", "        pass\n\n        return\n"),
        (
            changes.Place("before-last", "apply"),
            "y = 0",
            "        x = 2\n\n    y = 0\n\n    return x",
        ),
        (
            changes.Place("end-of-if", "apply"),
            "elif event == 3:\n    x = 3",
            "        x = 2\n\n    elif event == 3:\n        x = 3\n\n    return x",
        ),
    ],
)
def test_a_piece_goes_to_its_place_found_without_a_marker(
    place: changes.Place, text: str, expected: str
) -> None:
    result = changes.inserted(SOURCE, changes.Insertion("m.py", text, place))

    assert expected in result
    compile(result, "m.py", "exec")


def test_a_place_that_is_not_there_is_an_error() -> None:
    with pytest.raises(changes.ScaffoldError, match="m.py: no Other"):
        changes.inserted(SOURCE, changes.Insertion("m.py", "x", changes.Place("end-of", "Other")))


def test_a_contracts_fields_include_those_of_its_base_classes(tmp_path: Path) -> None:
    """`new-reaction` reads an event's fields from the source, in pydantic's order: base
    classes first, followed into the contracts modules they are imported from."""
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "base.py").write_text((REPO_ROOT / "contracts/base.py").read_text())
    (tmp_path / "contracts" / "parcels.py").write_text(
        "from contracts.base import ContractEvent\n\n\n"
        "class ParcelEvent(ContractEvent):\n    parcel_id: str\n    weight_kg: float\n"
    )
    (tmp_path / "contracts" / "invoices.py").write_text(
        "from contracts.parcels import ParcelEvent as Parcel\n\n\n"
        'class InvoiceSent(Parcel, name="invoices.InvoiceSent", version="1.0"):\n'
        "    total_cents: int\n    weight_kg: int\n"
    )

    fields = generate.contract_fields(tmp_path, "invoices", "InvoiceSent")

    assert fields == {"parcel_id": "str", "weight_kg": "int", "total_cents": "int"}
    assert list(fields) == ["parcel_id", "weight_kg", "total_cents"]
