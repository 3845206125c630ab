"""The committed JSON Schemas of every contract version, and the check that guards them.

``contracts/schemas/<name>/<major.minor>.json`` holds the schema of each version ever
released, written once by :func:`generate` and never rewritten. ``schemas.lock`` holds
their SHA-256, so a schema edited by hand is caught even when its model is long gone.
:func:`check` compares the models with the committed schemas and names, for every
problem, the contract, the field and the rule. The rules: contracts/README.md; why:
docs/adr/0010-schemas-as-files-and-a-compatibility-check.md.
"""

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from contracts import registry
from contracts.base import ContractEvent
from contracts.compatibility import Schema, changes

SCHEMAS_DIR = Path(__file__).parent / "schemas"
LOCK_FILE = "schemas.lock"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_of(model: type[ContractEvent]) -> Schema:
    """The JSON Schema a consumer of this version validates ``data`` against: self-
    contained (nested models inlined), titled with the contract's name and version."""
    generated = model.model_json_schema()
    definitions = generated.pop("$defs", {})
    body = _inline(generated, definitions)
    body.pop("title", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:contract:{model.name}:{model.version}",
        "title": f"{model.name} {model.version}",
        "x-contract-type": model.type(),
        **body,
    }


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = definitions[node["$ref"].removeprefix("#/$defs/")]
            siblings = {key: value for key, value in node.items() if key != "$ref"}
            return _inline({**target, **siblings}, definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node


_PROSE = ("title", "description", "examples")


def _without_prose(node: Any) -> Any:
    """The schema without titles, descriptions and examples (field names are kept)."""
    if isinstance(node, list):
        return [_without_prose(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: (
            {name: _without_prose(field) for name, field in value.items()}
            if key == "properties"
            else _without_prose(value)
        )
        for key, value in node.items()
        if key not in _PROSE
    }


def render(schema: Schema) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _digest(text: bytes) -> str:
    return "sha256:" + hashlib.sha256(text).hexdigest()


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def _major(version: str) -> int:
    return int(version.split(".")[0])


@dataclass(frozen=True)
class Problem:
    contract: str  # name, or name and version
    message: str

    def __str__(self) -> str:
        return f"{self.contract}: {self.message}"


class SchemaDirectory:
    """The committed schemas: ``<dir>/<name>/<version>.json`` plus ``<dir>/schemas.lock``."""

    def __init__(self, path: Path = SCHEMAS_DIR):
        self.path = path

    def file(self, name: str, version: str) -> Path:
        return self.path / name / f"{version}.json"

    def relative(self, file: Path) -> str:
        return file.relative_to(self.path).as_posix()

    def files(self) -> list[Path]:
        return sorted(self.path.glob("*/*.json")) if self.path.is_dir() else []

    def lock(self) -> dict[str, str]:
        lock_file = self.path / LOCK_FILE
        if not lock_file.exists():
            return {}
        lock: dict[str, str] = json.loads(lock_file.read_text())
        return lock

    def write_lock(self, lock: dict[str, str]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / LOCK_FILE).write_text(json.dumps(dict(sorted(lock.items())), indent=2) + "\n")

    def committed(self) -> dict[str, dict[str, Schema]]:
        """name → version → schema, for every schema file."""
        found: dict[str, dict[str, Schema]] = {}
        for file in self.files():
            found.setdefault(file.parent.name, {})[file.stem] = json.loads(file.read_text())
        return found


def check(
    directory: SchemaDirectory, models: Sequence[type[ContractEvent]] | None = None
) -> list[Problem]:
    """Every problem between the models (default: every contract version in the registry)
    and the committed schemas; none means all is well."""
    models = registry.ALL_EVENTS if models is None else models
    committed = directory.committed()
    return [
        *_check_lock(directory),
        *_check_history(committed),
        *(problem for model in models for problem in _check_model(model, committed)),
        *_check_majors(committed, models),
    ]


def generate(
    directory: SchemaDirectory, models: Sequence[type[ContractEvent]] | None = None
) -> tuple[list[Path], list[Problem]]:
    """Write the schema of every model version not committed yet, and lock it.

    Committed files are never rewritten. A version whose model breaks compatibility
    with the previous minor of its major is not written: its problems are returned.
    """
    models = registry.ALL_EVENTS if models is None else models
    committed = directory.committed()
    lock = directory.lock()
    written: list[Path] = []
    refused: list[Problem] = []
    for model in models:
        if model.version in committed.get(model.name, {}):
            continue
        problems = _check_model(model, committed, missing_is_a_problem=False)
        if problems:
            refused += problems
            continue
        file = directory.file(model.name, model.version)
        file.parent.mkdir(parents=True, exist_ok=True)
        text = render(schema_of(model)).encode()
        file.write_bytes(text)
        lock[directory.relative(file)] = _digest(text)
        committed.setdefault(model.name, {})[model.version] = schema_of(model)
        written.append(file)
    if written:
        directory.write_lock(lock)
    return written, refused


def _check_lock(directory: SchemaDirectory) -> Iterable[Problem]:
    lock = directory.lock()
    on_disk = {directory.relative(file): file for file in directory.files()}
    for relative, file in on_disk.items():
        contract = f"{file.parent.name} {file.stem}"
        if relative not in lock:
            yield Problem(
                contract,
                f"{relative} is not in {LOCK_FILE}: schema files are written by "
                "`cqrs contracts generate` only",
            )
        elif lock[relative] != _digest(file.read_bytes()):
            yield Problem(
                contract,
                f"the committed schema {relative} was edited in place: a released version's "
                "schema never changes (revert the file; publish the change as a new version)",
            )
    for relative in sorted(lock.keys() - on_disk.keys()):
        yield Problem(
            relative.removesuffix(".json").replace("/", " "),
            f"the committed schema {relative} was deleted: released versions stay readable "
            "forever (restore it)",
        )


def _check_history(committed: dict[str, dict[str, Schema]]) -> Iterable[Problem]:
    """Each committed minor is compatible with the minor before it in its major."""
    for name, versions in sorted(committed.items()):
        by_major: dict[int, list[str]] = {}
        for version in versions:
            by_major.setdefault(_major(version), []).append(version)
        for major_versions in by_major.values():
            ordered = sorted(major_versions, key=_minor)
            for before, after in pairwise(ordered):
                for change in changes(versions[before], versions[after]):
                    if change.breaking:
                        yield Problem(
                            f"{name} {after}",
                            f"{change} since {before}: a breaking change needs a new major",
                        )


def _check_model(
    model: type[ContractEvent],
    committed: dict[str, dict[str, Schema]],
    missing_is_a_problem: bool = True,
) -> list[Problem]:
    contract = f"{model.name} {model.version}"
    current = schema_of(model)
    versions = committed.get(model.name, {})
    same_major = sorted((v for v in versions if _major(v) == model.major()), key=_minor)
    problems: list[Problem] = []
    if model.version in versions:
        stored = versions[model.version]
        if _without_prose(stored) == _without_prose(current):
            return []  # the committed text of titles and descriptions stays as released
        found = changes(stored, current)
        next_minor = f"{model.major()}.{_minor(same_major[-1]) + 1}"
        for change in found:
            if change.breaking:
                problems.append(
                    Problem(
                        contract,
                        f"{change}: a breaking change needs a new major "
                        f"({model.major() + 1}.0), not an edit of {model.version}",
                    )
                )
        if not problems:
            what = "; ".join(str(change) for change in found)
            problems.append(
                Problem(
                    contract,
                    f"changed without a version bump ({what}): set version = "
                    f'"{next_minor}" and run `cqrs contracts generate`',
                )
            )
        return problems
    newer = [v for v in same_major if _minor(v) > _minor(model.version)]
    if newer:
        return [Problem(contract, f"is older than the committed {newer[-1]}")]
    if same_major:
        previous = same_major[-1]
        for change in changes(versions[previous], current):
            if change.breaking:
                problems.append(
                    Problem(
                        contract,
                        f"{change} since {previous}: a breaking change needs a new major "
                        f"({model.major() + 1}.0) with an upcaster from v{model.major()}",
                    )
                )
    if missing_is_a_problem and not problems:
        problems.append(Problem(contract, "has no committed schema: run `cqrs contracts generate`"))
    return problems


def _check_majors(
    committed: dict[str, dict[str, Schema]], models: Sequence[type[ContractEvent]]
) -> Iterable[Problem]:
    """Every committed major keeps a model, and each older major upcasts to the next."""
    majors = {(model.name, model.major()) for model in models}
    upcast_from = {(step.source.name, step.source.major()) for step in registry.upcasters()}
    for name, versions in sorted(committed.items()):
        for major in sorted({_major(version) for version in versions}):
            if (name, major) not in majors:
                yield Problem(
                    f"{name}.v{major}",
                    "has committed schemas but no model: its messages still in topics "
                    "could not be read (keep the model among the service's SUPERSEDED)",
                )
    for name, major in sorted(majors):
        if (name, major + 1) in majors and (name, major) not in upcast_from:
            yield Problem(
                f"{name}.v{major}",
                f"no upcaster to v{major + 1}: consumers of v{major + 1} could not read "
                f"v{major} messages",
            )
