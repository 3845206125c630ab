"""`cqrs remove-reference-saga`: take the reference createOrder saga out of a project made
from this template, so that only the kernel and the project's own domains remain.

The saga is one unit: the orders, consumers, kitchen and accounting services, their
contracts and committed schemas, the orders and tickets read models with their query
routes, the demo, and their tests. What goes:

- the files and directories of `REFERENCE_PATHS`, the saga's schemas and lock entries;
- in every text file, each block from a comment line ``cqrs-reference-saga: begin`` to
  one ``cqrs-reference-saga: end`` (comment syntax ``#``, ``--`` or ``<!-- -->``), both
  lines included; a comment line ``cqrs-reference-saga: instead TEXT`` becomes ``TEXT``,
  indented like it (what the file says once the saga is gone);
- the Procfile's processes of the four services and the demo's.

Standard library only: copier's post-copy task runs ``python -m scaffold.prune``
with the Python that runs copier, before the new project has a venv. All or nothing: the
plan is checked first, then applied in `changes.transaction`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scaffold.changes import ScaffoldError, transaction

SERVICES = ("orders", "consumers", "kitchen", "accounting")
REFERENCE_PATHS = (
    *(f"write_side/{service}" for service in SERVICES),
    *(f"contracts/{service}.py" for service in SERVICES),
    "projections/orders.py",
    "projections/tickets.py",
    "read_side/reference_saga.py",
    "docs/read-models.md",
    "devstack/demo.py",
    "bench/bare_saga.py",
    "bench/capacity.py",
    "bench/examples.py",
    "bench/flows.py",
    "bench/hops.py",
    "bench/saga_stores.py",
    *(
        f"bench/scenarios/{scenario}.py"
        for scenario in (
            "end_to_end",
            "history",
            "idle",
            "projection",
            "query_api",
            "rebuild",
            "relay",
            "saga",
            "write_path",
        )
    ),
    "tests/integration/test_bench.py",
    "tests/integration/test_read_model_versions.py",
    "tests/integration/test_replay.py",
    "tests/unit/test_replay_logic.py",
    "tests/examples.py",
    "tests/fixtures/orders-topic-v1.jsonl",
    "tests/e2e/test_order_flow.py",
    "tests/e2e/test_saga.py",
    "tests/integration/test_accounting_api.py",
    "tests/integration/test_auth.py",
    "tests/integration/test_asyncapi.py",
    "tests/integration/test_consumers_accounting_reactions.py",
    "tests/integration/test_consumers_api.py",
    "tests/integration/test_dead_letters.py",
    "tests/integration/test_kitchen_api.py",
    "tests/integration/test_hostile_input.py",
    "tests/integration/test_kitchen_reactions.py",
    "tests/integration/test_order_versions.py",
    "tests/integration/test_orders_api.py",
    "tests/integration/test_orders_relay.py",
    "tests/integration/test_projection.py",
    "tests/integration/test_projection_versions.py",
    "tests/integration/test_query_api.py",
    "tests/integration/test_query_api_saga.py",
    "tests/integration/test_saga_batches.py",
    "tests/integration/test_saga_worker.py",
    "tests/unit/test_accounting.py",
    "tests/unit/test_bench_capacity.py",
    "tests/unit/test_consumer_contracts.py",
    "tests/unit/test_consumers.py",
    "tests/unit/test_contract_mapping.py",
    "tests/unit/test_contract_schemas.py",
    "tests/unit/test_contract_versions.py",
    "tests/unit/test_kitchen.py",
    "tests/unit/test_order.py",
)
"""The saga's own files: nothing that stays imports them once the marked blocks are gone."""
SCHEMAS = "contracts/schemas"
SKIPPED_DIRS = {".git", "var", "build", "node_modules", "__pycache__"}
MARKER = re.compile(
    r"^(?P<indent>\s*)(?:#|--|<!--)\s*cqrs-reference-saga: (?P<kind>begin|end|instead)"
    r"(?: (?P<text>.*?))?\s*(?:-->)?\s*$"
)
PROCFILE_LINE = re.compile(rf"^(?:(?:{'|'.join(SERVICES)})-[\w-]+|demo)\s*:")


@dataclass
class Plan:
    removed: list[str] = field(default_factory=list)
    edited: dict[str, str] = field(default_factory=dict)
    """Path → its new text."""

    def describe(self) -> list[str]:
        return [*(f"remove {path}" for path in self.removed), *(f"edit   {p}" for p in self.edited)]


def without_saga_blocks(text: str, path: str) -> str:
    """``text`` with its marked blocks removed and its ``instead`` lines in their place."""
    kept: list[str] = []
    begun: int | None = None
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        match = MARKER.match(line)
        kind = match["kind"] if match else None
        if kind == "begin":
            if begun is not None:
                raise ScaffoldError(
                    f"{path}:{number}: a block begins inside the one of line {begun}"
                )
            begun = number
        elif kind == "end":
            if begun is None:
                raise ScaffoldError(f"{path}:{number}: a block ends that did not begin")
            begun = None
        elif begun is not None:
            continue
        elif match and kind == "instead":
            kept.append(f"{match['indent']}{match['text'] or ''}".rstrip() + "\n")
        else:
            kept.append(line)
    if begun is not None:
        raise ScaffoldError(f"{path}:{begun}: a block begins and never ends")
    result = "".join(kept)
    # A block at the end leaves the blank lines that preceded it.
    return result.rstrip("\n") + "\n" if result != text else text


def _text_files(root: Path) -> list[Path]:
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if name not in SKIPPED_DIRS and not name.startswith((".venv", ".mypy", ".ruff", ".pyt"))
        )
        found += [Path(directory, name) for name in sorted(files)]
    return found


def plan(root: Path) -> Plan:
    """What removing the saga changes in ``root``; raises `ScaffoldError` if it cannot."""
    if not (root / "write_side" / "orders").is_dir():
        raise ScaffoldError(f"{root} has no reference saga (write_side/orders is missing)")
    result = Plan(removed=[path for path in REFERENCE_PATHS if (root / path).exists()])
    schemas = root / SCHEMAS
    if schemas.is_dir():
        result.removed += sorted(
            f"{SCHEMAS}/{entry.name}"
            for entry in schemas.iterdir()
            if entry.name.split(".", 1)[0] in SERVICES
        )
        lock_file = schemas / "schemas.lock"
        if lock_file.is_file():
            lock = json.loads(lock_file.read_text())
            kept = {k: v for k, v in lock.items() if k.split(".", 1)[0] not in SERVICES}
            if kept != lock:
                result.edited[f"{SCHEMAS}/schemas.lock"] = (
                    json.dumps(dict(sorted(kept.items())), indent=2) + "\n"
                )
    gone = [root / path for path in result.removed]
    for path in _text_files(root):
        relative = path.relative_to(root).as_posix()
        if any(path == removed or removed in path.parents for removed in gone):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if relative == "Procfile":
            new = "".join(
                line for line in text.splitlines(keepends=True) if not PROCFILE_LINE.match(line)
            )
        else:
            new = without_saga_blocks(text, relative)
        if new != text:
            result.edited[relative] = new
    return result


def remove_reference_saga(root: Path) -> Plan:
    """Apply `plan(root)` all or nothing."""
    planned = plan(root)
    with transaction(root) as recorded:
        for relative, text in planned.edited.items():
            recorded.edit(relative, text)
        for relative in planned.removed:
            recorded.remove(relative)
    return planned


def _command(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    try:
        planned = plan(root) if args.dry_run else remove_reference_saga(root)
    except ScaffoldError as error:
        print(f"error: {error}; nothing was changed")
        return 2
    for line in planned.describe():
        print(line)
    if args.dry_run:
        print("dry run: nothing was changed")
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would change, change nothing"
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project (default: .)")
    parser.set_defaults(handler=_command)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `remove-reference-saga` to `cqrs`."""
    _add_arguments(
        subparsers.add_parser(
            "remove-reference-saga",
            help="take the createOrder saga (orders, consumers, kitchen, accounting) out",
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m scaffold.prune`: the same command without the project's deps."""
    parser = argparse.ArgumentParser(prog="python -m scaffold.prune", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
