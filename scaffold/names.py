"""Validation of what a user names: domains, aggregates, events and fields."""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass

from scaffold.changes import ScaffoldError

SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
CAMEL = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*")

FIELD_TYPES: dict[str, str] = {
    "str": '"{name}-1"',
    "int": "1",
    "float": "1.5",
    "bool": "True",
}
"""Supported field types and the example value the generated tests use (a Python literal)."""

RESERVED_DOMAINS = frozenset(
    {
        # modules of the shared packages (contracts, projections, read_side, write_side)
        "kernel", "base", "envelope", "registry", "consistency", "schemas",
        "projection", "runtime", "settings", "worker", "api", "models", "read_model",
        # process and compose service names
        "query", "projections", "demo", "topics", "postgres", "kafka", "mongo",
        # top-level packages of the project
        "write_side", "read_side", "contracts", "devstack", "tests", "bench",
    }
)  # fmt: skip
RESERVED_FIELDS = frozenset(
    {
        # the aggregate's and the read model's own attributes
        "id", "version", "state", "close_reason", "created_at", "updated_at", "position",
        # eventsourcing's event attributes, a contract's class attributes
        "originator_id", "originator_version", "timestamp", "created_on", "modified_on",
        "name", "type", "major", "reason",
    }
)  # fmt: skip


class InvalidName(ScaffoldError):
    """A name the generator refuses; the message says why."""


def _not_python(name: str) -> str | None:
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "a Python keyword"
    if hasattr(builtins, name):
        return "a Python builtin"
    return None


def snake_case(camel: str) -> str:
    """`DeliveryNote` → `delivery_note`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def camel_case(snake: str) -> str:
    """`delivery_notes` → `DeliveryNotes`."""
    return "".join(part.capitalize() for part in snake.split("_"))


def domain_name(name: str) -> str:
    if not SNAKE.fullmatch(name):
        raise InvalidName(
            f"domain {name!r} must be lower snake case: a letter, then letters, digits, "
            "single underscores (e.g. shipments, delivery_notes)"
        )
    if why := _not_python(name):
        raise InvalidName(f"domain {name!r} is {why}")
    if name in RESERVED_DOMAINS:
        raise InvalidName(f"domain {name!r} is a name the project already uses")
    return name


def class_name(name: str, what: str) -> str:
    if not CAMEL.fullmatch(name):
        raise InvalidName(f"{what} {name!r} must be CamelCase letters and digits (e.g. Shipment)")
    if why := _not_python(name):
        raise InvalidName(f"{what} {name!r} is {why}")
    return name


@dataclass(frozen=True)
class Field:
    name: str
    type: str

    @property
    def example(self) -> str:
        return FIELD_TYPES[self.type].format(name=self.name.replace("_", "-"))

    def as_answer(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "example": self.example}


def parse_fields(specs: list[str], taken: frozenset[str] = frozenset()) -> list[Field]:
    """`["title:str", "amount:int"]` → fields; refuses bad, reserved and repeated names."""
    fields: list[Field] = []
    for spec in specs:
        name, sep, type_ = spec.partition(":")
        if not sep or type_ not in FIELD_TYPES:
            raise InvalidName(
                f"field {spec!r} must be name:type with type one of {', '.join(FIELD_TYPES)}"
            )
        if not SNAKE.fullmatch(name):
            raise InvalidName(f"field {name!r} must be lower snake case")
        if why := _not_python(name):
            raise InvalidName(f"field {name!r} is {why}")
        if name in RESERVED_FIELDS or name in taken or name.startswith("model_"):
            raise InvalidName(f"field {name!r} is reserved (the generated code uses that name)")
        if any(field.name == name for field in fields):
            raise InvalidName(f"field {name!r} is given twice")
        fields.append(Field(name, type_))
    return fields
