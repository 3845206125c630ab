"""The committed schemas and the compatibility check: each rule on throwaway contracts,
then the real contracts (through `cqrs contracts check`)."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, create_model

from contracts import orders, registry
from contracts.base import ContractEvent
from contracts.schemas import LOCK_FILE, SchemaDirectory, check, generate, schema_of
from devstack.cli import main
from devstack.servers import REPO_ROOT
from scaffold.generate import contract_fields

BASE_FIELDS: dict[str, Any] = {
    "order_id": (str, ...),
    "amount": (int, Field(gt=0)),
    "note": (str | None, None),
}


def contract(version: str, name: str = "test.Thing", **fields: Any) -> type[ContractEvent]:
    """A throwaway contract: BASE_FIELDS changed by ``fields`` (None removes one)."""
    merged = {**BASE_FIELDS, **fields}
    definitions = {key: value for key, value in merged.items() if value is not None}
    model = create_model("Thing", __base__=ContractEvent, **definitions)
    model.name = name
    model.version = version
    return model


def released(path: Path, *models: type[ContractEvent]) -> SchemaDirectory:
    directory = SchemaDirectory(path)
    written, refused = generate(directory, models)
    assert refused == [] and len(written) == len(models)
    return directory


def problems(directory: SchemaDirectory, *models: type[ContractEvent]) -> list[str]:
    return [str(problem) for problem in check(directory, models)]


# Between minors of one major: only a new optional field is compatible.


def test_a_new_optional_field_is_a_minor_version(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"))
    newer = contract("1.1", extra=(str | None, None))

    assert problems(directory, newer) == [
        "test.Thing 1.1: has no committed schema: run `cqrs contracts generate`"
    ]
    generate(directory, [newer])
    assert problems(directory, newer) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount": None}, "field amount: removed (a rename is a removal and an addition)"),
        ({"amount": (str, ...)}, "field amount: type changed from integer to string"),
        ({"amount": (int | None, None)}, "field amount: was required, is now optional"),
        ({"note": (str, ...)}, "field note: was optional, is now required"),
        ({"extra": (str, ...)}, "field extra: added as a required field"),
        (
            {"amount": (int, Field(gt=10))},
            "field amount: constraint exclusiveMinimum changed from 0 to 10",
        ),
        ({"note": (str | None, "n/a")}, "field note: default changed from None to 'n/a'"),
    ],
    ids=[
        "removed",
        "retyped",
        "required-to-optional",
        "optional-to-required",
        "new-required",
        "narrowed",
        "new-default",
    ],
)
def test_a_breaking_change_without_a_new_major_fails_naming_field_and_rule(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    directory = released(tmp_path, contract("1.0"))

    found = problems(directory, contract("1.1", **change))

    assert (
        f"test.Thing 1.1: {expected} since 1.0: a breaking change needs a new major (2.0) "
        "with an upcaster from v1"
    ) in found
    assert all("a breaking change needs a new major" in problem for problem in found)


def test_a_rename_is_a_removal_and_a_required_addition(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"))

    found = problems(directory, contract("1.1", amount=None, amount_cents=(int, Field(gt=0))))

    assert [line.split(": ", 1)[1].split(" since")[0] for line in found] == [
        "field amount: removed (a rename is a removal and an addition)",
        "field amount_cents: added as a required field",
    ]


def test_a_change_inside_a_list_of_objects_names_the_nested_field(tmp_path: Path) -> None:
    item = create_model("Item", quantity=(int, ...))
    retyped_item = create_model("Item", quantity=(float, ...))
    directory = released(tmp_path, contract("1.0", items=(list[item], ...)))

    [problem] = problems(directory, contract("1.1", items=(list[retyped_item], ...)))

    assert "field items[].quantity: type changed from integer to number" in problem


def test_generate_refuses_a_breaking_minor_and_writes_nothing(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"))

    written, refused = generate(directory, [contract("1.1", amount=(str, ...))])

    assert written == []
    assert [str(p) for p in refused] == [
        (
            "test.Thing 1.1: field amount: type changed from integer to string since 1.0: "
            "a breaking change needs a new major (2.0) with an upcaster from v1"
        )
    ]
    assert not directory.file("test.Thing", "1.1").exists()


# The same version with another schema.


def test_a_compatible_change_without_a_version_bump_fails(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"))

    assert problems(directory, contract("1.0", extra=(str | None, None))) == [
        (
            "test.Thing 1.0: changed without a version bump (field extra: added as an optional "
            'field): set version = "1.1" and run `cqrs contracts generate`'
        )
    ]


def test_a_breaking_change_in_place_fails_naming_the_field(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"))

    assert problems(directory, contract("1.0", amount=(str, ...))) == [
        (
            "test.Thing 1.0: field amount: type changed from integer to string: a breaking "
            "change needs a new major (2.0), not an edit of 1.0"
        )
    ]


def test_a_changed_description_is_not_a_new_version(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"))
    described = contract("1.0", amount=(int, Field(gt=0, description="In cents.")))

    assert problems(directory, described) == []


def test_generate_never_rewrites_a_committed_schema(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"))
    before = directory.file("test.Thing", "1.0").read_bytes()

    written, _ = generate(directory, [contract("1.0", amount=(str, ...))])

    assert written == []
    assert directory.file("test.Thing", "1.0").read_bytes() == before


# The committed files themselves.


def test_a_committed_schema_edited_in_place_fails_even_without_its_model(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"), contract("1.1", extra=(str | None, None)))
    file = directory.file("test.Thing", "1.0")
    schema = json.loads(file.read_text())
    schema["properties"]["amount"]["type"] = "string"
    file.write_text(json.dumps(schema))

    found = problems(directory, contract("1.1", extra=(str | None, None)))

    assert found[0] == (
        "test.Thing 1.0: the committed schema test.Thing/1.0.json was edited in place: a "
        "released version's schema never changes (revert the file; publish the change as a "
        "new version)"
    )


def test_a_deleted_or_unlocked_schema_fails(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"))
    directory.file("test.Thing", "1.0").unlink()
    stray = directory.file("test.Other", "1.0")
    stray.parent.mkdir()
    stray.write_text("{}")

    found = problems(directory)

    assert "test.Other 1.0: test.Other/1.0.json is not in schemas.lock" in found[0]
    assert "the committed schema test.Thing/1.0.json was deleted" in found[1]


def test_a_committed_major_without_a_model_fails(tmp_path: Path) -> None:
    directory = released(tmp_path, contract("1.0"), contract("2.0", amount=(str, ...)))

    found = problems(directory, contract("2.0", amount=(str, ...)))

    assert found == [
        (
            "test.Thing.v1: has committed schemas but no model: its messages still in topics "
            "could not be read (keep the model among the service's SUPERSEDED)"
        )
    ]


def test_a_new_major_needs_an_upcaster_from_the_previous_one(tmp_path: Path) -> None:
    models = (contract("1.0"), contract("2.0", amount=(str, ...)))
    directory = released(tmp_path, *models)

    assert problems(directory, *models) == [
        "test.Thing.v1: no upcaster to v2: consumers of v2 could not read v1 messages"
    ]


# The real contracts.


def test_the_committed_schemas_match_the_contracts() -> None:
    assert check(SchemaDirectory()) == []


def test_schemas_are_self_contained_and_name_their_version() -> None:
    schema = schema_of(orders.OrderCreated)

    assert schema["title"] == "orders.OrderCreated 2.0"
    assert schema["x-contract-type"] == "orders.OrderCreated.v2"
    assert "$ref" not in json.dumps(schema)
    assert schema["properties"]["delivery_address"]["required"] == ["street"]


class RetypedOrderCreated(orders.OrderCreated):
    """orders.OrderCreated 2.0 with total_cents retyped, and no new major."""

    total_cents: str  # type: ignore[assignment]


def test_retyping_a_real_contract_without_a_new_major_fails_the_cli_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The acceptance case: what CI runs (`make lint` → `cqrs contracts check`)."""
    shutil.copytree(SchemaDirectory().path, tmp_path / "schemas")
    models = tuple(
        RetypedOrderCreated if model is orders.OrderCreated else model
        for model in registry.ALL_EVENTS
    )
    monkeypatch.setattr(registry, "ALL_EVENTS", models)

    exit_code = main(["contracts", "check", "--schemas", str(tmp_path / "schemas")])

    assert exit_code == 1
    assert (
        "orders.OrderCreated 2.0: field total_cents: type changed from integer to string: "
        "a breaking change needs a new major (3.0), not an edit of 2.0"
    ) in capsys.readouterr().err
    assert (tmp_path / "schemas" / LOCK_FILE).exists()


def test_generate_into_an_empty_directory_writes_every_committed_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["contracts", "generate", "--schemas", str(tmp_path)]) == 0

    committed, generated = SchemaDirectory(), SchemaDirectory(tmp_path)
    assert [committed.relative(f) for f in committed.files()] == [
        generated.relative(f) for f in generated.files()
    ]
    assert generated.lock().keys() == committed.lock().keys()
    assert check(generated) == []
    assert "wrote" in capsys.readouterr().out


def test_the_scaffold_reads_each_contracts_fields_as_its_model_has_them() -> None:
    """`cqrs new-reaction --on <service>.<Event>` reads the fields from the source, where
    most come from a base class (``OrderEvent``, ``OrderPassedOn``)."""
    for model in registry.ALL_EVENTS:
        source = model.__module__.removeprefix("contracts.")
        fields = contract_fields(REPO_ROOT, source, model.__name__)
        assert list(fields) == list(model.model_fields), model.type()
