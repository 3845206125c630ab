"""What changed between two JSON Schemas of one contract, and which changes break readers.

A change is compatible (a minor version) only if both sides keep working while
producers and consumers run different minors of one major:

- consumers on the new minor read the old messages still in a topic, and
- consumers still on the old minor read what producers on the new minor publish.

So only a new *optional* field is compatible (old readers ignore it, new readers
default it). A removed or renamed field, a changed type, a field that became required
or optional, a changed constraint (narrowed: old messages fail; widened: old readers
fail) or default all break one side: they need a new major. The rules are written for
people in contracts/README.md.
"""

from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

CONSTRAINTS = (
    "const",
    "enum",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "additionalProperties",
)
"""Keywords that restrict the values a field may take."""

_MISSING = object()


@dataclass(frozen=True)
class Change:
    field: str  # dotted path; ``[]`` for the items of a list
    rule: str
    breaking: bool

    def __str__(self) -> str:
        return f"field {self.field}: {self.rule}"


def changes(old: Schema, new: Schema) -> list[Change]:
    """The structural changes from ``old`` to ``new`` (titles and descriptions aside)."""
    return _node(old, new, "")


def _node(old: Schema, new: Schema, path: str) -> list[Change]:
    old_kind, new_kind = _kind(old), _kind(new)
    if old_kind != new_kind:
        return [Change(path, f"type changed from {old_kind} to {new_kind}", breaking=True)]
    found: list[Change] = []
    for keyword in (*CONSTRAINTS, "default"):
        before, after = old.get(keyword, _MISSING), new.get(keyword, _MISSING)
        if before != after:
            what = "default" if keyword == "default" else f"constraint {keyword}"
            found.append(
                Change(path, f"{what} changed from {_show(before)} to {_show(after)}", True)
            )
    old_branches, new_branches = _non_null(old), _non_null(new)
    nullable = old_branches[:1] != [old]  # e.g. anyOf: [{object}, {null}]
    if nullable and len(old_branches) == len(new_branches) == 1:
        return found + _node(old_branches[0], new_branches[0], path)
    if "items" in old and "items" in new:
        found += _node(old["items"], new["items"], f"{path}[]")
    if "properties" in old or "properties" in new:
        found += _properties(old, new, path)
    return found


def _properties(old: Schema, new: Schema, path: str) -> list[Change]:
    old_fields: dict[str, Schema] = old.get("properties", {})
    new_fields: dict[str, Schema] = new.get("properties", {})
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    found: list[Change] = []
    for name in old_fields.keys() - new_fields.keys():
        found.append(
            Change(_join(path, name), "removed (a rename is a removal and an addition)", True)
        )
    for name in new_fields.keys() - old_fields.keys():
        if name in new_required:
            found.append(Change(_join(path, name), "added as a required field", True))
        else:
            found.append(Change(_join(path, name), "added as an optional field", False))
    for name in old_fields.keys() & new_fields.keys():
        field = _join(path, name)
        if name not in old_required and name in new_required:
            found.append(Change(field, "was optional, is now required", True))
        if name in old_required and name not in new_required:
            found.append(Change(field, "was required, is now optional", True))
        found += _node(old_fields[name], new_fields[name], field)
    return sorted(found, key=lambda change: change.field)


def _kind(node: Schema) -> str:
    """A field's type in words: ``integer``, ``string or null``, ``array``, ``object``."""
    if "anyOf" in node or "oneOf" in node:
        return " or ".join(sorted({_kind(branch) for branch in _branches(node)}))
    declared = node.get("type")
    if isinstance(declared, list):
        return " or ".join(sorted(declared))
    if declared is None:
        return "object" if "properties" in node else "any"
    return str(declared)


def _branches(node: Schema) -> list[Schema]:
    branches: list[Schema] = node.get("anyOf") or node.get("oneOf") or [node]
    return branches


def _non_null(node: Schema) -> list[Schema]:
    return [branch for branch in _branches(node) if branch.get("type") != "null"]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(value: object) -> str:
    return "(none)" if value is _MISSING else repr(value)
