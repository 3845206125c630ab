"""Find a package's modules by what they define at their top level (standard library only).

A domain is its files: the contract registry, the projections and the query API find
each domain's module this way, so adding or removing a domain edits no registry. The
source is read with `ast` first, so only the modules that match are imported (never a
worker or an entry point that happens to sit in the same package).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def defines(path: Path, name: str) -> bool:
    """Does the module at ``path`` bind ``name`` at its top level (an assignment)?"""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return True
    return False


def calls_at_top_level(path: Path, function: str) -> bool:
    """Does the module at ``path`` assign the result of ``function(...)`` at its top level?"""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(value, ast.Call) and ast.unparse(value.func) == function:
            return True
    return False


def modules_where(package: str, matches: str, *, exclude: tuple[str, ...] = ()) -> list[ModuleType]:
    """The modules of ``package``, sorted by name, whose source binds ``matches`` at its
    top level; ``exclude`` names modules never imported (the caller itself)."""
    return _import(package, lambda path: defines(path, matches), exclude)


def modules_calling(package: str, function: str) -> list[ModuleType]:
    """The modules of ``package``, sorted by name, that assign a ``function(...)`` call."""
    return _import(package, lambda path: calls_at_top_level(path, function), ())


def _import(
    package: str, wanted: Callable[[Path], bool], exclude: tuple[str, ...]
) -> list[ModuleType]:
    root = importlib.import_module(package)
    found = []
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda info: info.name):
        if info.ispkg or info.name.startswith("_") or info.name in exclude:
            continue
        path = Path(next(iter(root.__path__))) / f"{info.name}.py"
        if path.is_file() and wanted(path):
            found.append(importlib.import_module(f"{package}.{info.name}"))
    return found
