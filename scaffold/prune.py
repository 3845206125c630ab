"""`cqrs remove-reference-saga`: take the reference createOrder saga out of a project made
from this template, so that only the kernel and the project's own domains remain.

The saga is its files, and removing it edits no other file (ADR 29). Its files are:

- its four domains' files: `write_side/<d>/`, `contracts/<d>.py`, their committed
  schemas `contracts/schemas/<d>.*` (and their entries in the schemas' lock, a generated
  file), `projections/<name>.py` and `read_side/<name>.py` for each domain or read model
  of the saga (`READ_MODELS`);
- every path with a part named `reference_saga...`: its tests (`tests/reference_saga/`),
  its query routes while they are one module (`read_side/reference_saga.py`);
- the demo (`devstack/demo.py`);
- the modules of `bench/` that are the saga's, found by what they import: those that
  import the saga's code (directly or through another module of `bench/`) and the
  helpers that only the saga's code imports; a folder of them goes whole. So its
  scenarios go, its helpers and its chaos rounds (`bench/chaos/`, `make chaos`), and
  `make bench` keeps its runner, with no scenario. A new scenario needs no entry here.

Then the generated files (`cqrs generate`: the Procfile, docker-compose.yml, the
PostgreSQL init script) are written again, without the saga's processes and databases.
Its guide, `docs/reference-saga.md`, stays: the other guides link it as the template's
worked example, and it links only to guides.

Standard library only: copier's post-copy task runs ``python -m scaffold.prune``
with the Python that runs copier, before the new project has a venv. All or nothing: the
plan is made first, then applied in `changes.transaction`.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scaffold.changes import ScaffoldError, transaction
from scaffold.generated import generated_files

DOMAINS = ("orders", "consumers", "kitchen", "accounting")
READ_MODELS = ("tickets",)
"""The saga's read models not named after one of its domains."""
NAMED = ("reference_saga",)
"""A path with a part that starts with one of these is the saga's."""
DEMO = "devstack/demo.py"
BENCHMARKS = "bench"
"""Its modules that are the saga's are found by what they import (`_saga_benchmarks`)."""
SCHEMAS = "contracts/schemas"
SKIPPED_DIRS = {".git", "var", "build", "node_modules", "__pycache__"}


@dataclass
class Plan:
    removed: list[str] = field(default_factory=list)
    edited: dict[str, str] = field(default_factory=dict)
    """Path → its new text (generated files only)."""

    def describe(self) -> list[str]:
        return [*(f"remove {path}" for path in self.removed), *(f"write  {p}" for p in self.edited)]


def _named(root: Path) -> list[str]:
    """Every path under ``root`` with a part named for the saga (the outermost only)."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in SKIPPED_DIRS or part.startswith(".") for part in relative.parts):
            continue
        if relative.name.startswith(NAMED) and not relative.parent.name.startswith(NAMED):
            found.append(relative.as_posix())
    return [p for p in found if not any(p.startswith(f"{q}/") for q in found)]


def _python_files(root: Path) -> dict[str, str]:
    """Every module under ``root``: its dotted name → its path (a package is its
    ``__init__.py``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in SKIPPED_DIRS or part.startswith(".") for part in relative.parts):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts and all(part.isidentifier() for part in parts):
            found[".".join(parts)] = relative.as_posix()
    return found


def _imported(name: str, path: str, source: str) -> set[str]:
    """The names module ``name`` imports: modules, and ``module.attribute`` for each
    name taken from one (which may be a module too)."""
    try:
        tree = ast.parse(source, path)
    except SyntaxError as error:
        raise ScaffoldError(f"cannot read {path} to find what it imports: {error}") from error
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _imports_one_of(imported: set[str], modules: set[str]) -> bool:
    return any(
        name in modules or any(name.startswith(f"{module}.") for module in modules)
        for name in imported
    )


def _under(path: str, folders: Sequence[str]) -> bool:
    return any(path == folder or path.startswith(f"{folder}/") for folder in folders)


def _naming(paths: Sequence[str]) -> re.Pattern[str]:
    """Any of ``paths``, or its dotted module name, as a whole word: a module that starts
    the saga's processes names them (``write_side.orders.api:create_app``)."""
    names = {re.escape(p) for p in paths}
    names |= {re.escape(p.removesuffix(".py").replace("/", ".")) for p in paths}
    return re.compile(rf"(?<![\w./-])(?:{'|'.join(sorted(names))})(?![\w-])")


def _saga_benchmarks(root: Path, saga_paths: Sequence[str]) -> list[str]:
    """The files and folders of `bench/` that are the saga's (see the module's doc)."""
    modules = _python_files(root)
    sources = {name: (root / path).read_text(encoding="utf-8") for name, path in modules.items()}
    imports = {name: _imported(name, modules[name], source) for name, source in sources.items()}
    benchmarks = {name for name, path in modules.items() if _under(path, [BENCHMARKS])}
    naming = _naming(saga_paths)
    saga = {name for name, path in modules.items() if _under(path, saga_paths)}
    saga |= {name for name in benchmarks if naming.search(sources[name])}
    changed = True
    while changed:
        changed = False
        for name in sorted(benchmarks - saga):
            importers = [m for m in modules if m != name and _imports_one_of(imports[m], {name})]
            only_the_sagas = bool(importers) and all(m in saga for m in importers)
            if only_the_sagas or _imports_one_of(imports[name], saga):
                saga.add(name)
                changed = True
    files = sorted(modules[name] for name in benchmarks & saga)
    kept = [modules[name] for name in benchmarks - saga]
    # A folder with nothing kept in it goes whole (the outermost such folder).
    whole = sorted(
        {
            folder
            for folder in (str(Path(path).parent) for path in files)
            if not any(_under(k, [folder]) for k in kept)
        }
    )
    outermost = [folder for folder in whole if not _under(str(Path(folder).parent), whole)]
    return [*outermost, *(path for path in files if not _under(path, outermost))]


def saga_files(root: Path) -> list[str]:
    """The saga's files and folders present in ``root``, by the rules above."""
    candidates = [
        *(f"write_side/{domain}" for domain in DOMAINS),
        *(f"contracts/{domain}.py" for domain in DOMAINS),
        *(f"{side}/{name}.py" for side in ("projections", "read_side") for name in DOMAINS),
        *(f"{side}/{name}.py" for side in ("projections", "read_side") for name in READ_MODELS),
        *_named(root),
        DEMO,
    ]
    schemas = root / SCHEMAS
    if schemas.is_dir():
        candidates += sorted(
            f"{SCHEMAS}/{entry.name}"
            for entry in schemas.iterdir()
            if entry.name.split(".", 1)[0] in DOMAINS
        )
    present = [path for path in candidates if (root / path).exists()]
    return list(dict.fromkeys([*present, *_saga_benchmarks(root, present)]))


def plan(root: Path) -> Plan:
    """What removing the saga changes in ``root``; raises `ScaffoldError` if it cannot."""
    if not (root / "write_side" / "orders").is_dir():
        raise ScaffoldError(f"{root} has no reference saga (write_side/orders is missing)")
    result = Plan(removed=saga_files(root))
    lock_file = root / SCHEMAS / "schemas.lock"
    if lock_file.is_file():
        lock = json.loads(lock_file.read_text())
        kept = {k: v for k, v in lock.items() if k.split(".", 1)[0] not in DOMAINS}
        if kept != lock:
            result.edited[f"{SCHEMAS}/schemas.lock"] = (
                json.dumps(dict(sorted(kept.items())), indent=2) + "\n"
            )
    return result


def remove_reference_saga(root: Path) -> Plan:
    """Apply `plan(root)` all or nothing."""
    planned = plan(root)
    with transaction(root) as recorded:
        for relative, text in planned.edited.items():
            recorded.edit(relative, text)
        for relative in planned.removed:
            recorded.remove(relative)
        for relative, text in generated_files(root).items():
            if (root / relative).read_text() != text:
                recorded.edit(relative, text)
                planned.edited[relative] = text
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
