"""Services share nothing but contracts: checked on the source, with `ast`.

- `kernel/` is shared by every process, so it imports nothing of the project but
  `contracts` (no domain, no tooling).
- `write_side/<service>/` imports its own package, `kernel`, `contracts` and
  libraries; never another service, the read side, projections or the dev tooling.
- `projections/` and `read_side/` import themselves, `kernel` and `contracts`: never
  `write_side`.
- `contracts/` is the bottom layer: it imports no other package of the project.

Every `import`, `from ... import` (relative ones resolved, `if TYPE_CHECKING:` ones
included) and `importlib.import_module("...")` / `__import__("...")` with a literal
name counts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import find_services

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = (
    "kernel",
    "write_side",
    "contracts",
    "projections",
    "read_side",
    "operations",
    "scaffold",
    "devstack",
    "tests",
)
SERVICES = sorted(path.parent.name for path in (REPO_ROOT / "write_side").glob("*/__init__.py"))


def module_name(path: Path) -> str:
    """`write_side/orders/api.py` → `write_side.orders.api` (a package → its name)."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Every module name the source imports, relative imports made absolute."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield base
            # `from write_side import kitchen` imports the package write_side.kitchen.
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def allowed_first_party(module: str) -> tuple[str, ...]:
    """The project's packages that `module` may import (libraries are always allowed)."""
    top, _, rest = module.partition(".")
    if top == "kernel":
        return ("kernel", "contracts")
    if top == "write_side":
        service = rest.partition(".")[0]
        if service == "":
            return ("kernel", "contracts")
        return (f"write_side.{service}", "kernel", "contracts")
    if top in ("projections", "read_side"):
        return (top, "kernel", "contracts")
    if top == "contracts":
        return ("contracts",)
    raise ValueError(f"no rule for {module}")


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of `module`'s source that cross a boundary, sorted."""
    allowed = allowed_first_party(module)
    found = set()
    for name in imported_modules(source, module, is_package):
        if name.partition(".")[0] not in FIRST_PARTY:
            continue  # the standard library or a third-party library
        if name in ("write_side",) and "kernel" in allowed:
            continue  # the namespace itself (its __init__ holds no code of a service)
        if not any(_within(name, package) for package in allowed):
            found.add(name)
    # `from write_side.orders.domain import Order` is one crossing, not two.
    return sorted(name for name in found if not any(name.startswith(f"{o}.") for o in found))


def checked_files() -> list[Path]:
    files: list[Path] = []
    for package in ("kernel", "write_side", "projections", "read_side", "contracts"):
        files += sorted((REPO_ROOT / package).rglob("*.py"))
    return files


def test_the_services_are_found() -> None:
    assert SERVICES == [service.name for service in find_services()]


@pytest.mark.parametrize("path", checked_files(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_module_stays_inside_its_boundary(path: Path) -> None:
    module = module_name(path)
    crossing = violations(path.read_text(), module, path.name == "__init__.py")
    allowed = ", ".join(allowed_first_party(module))
    assert crossing == [], f"{module} imports {crossing}; it may import only {allowed}"


# ------------------------------------------------------------ the checker itself


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("write_side.kitchen.saga", "from write_side.orders.domain import Order"),
        ("write_side.kitchen.saga", "import write_side.accounting.application"),
        ("write_side.kitchen.saga", "from write_side import consumers"),
        ("write_side.kitchen.saga", "from ..orders import domain"),
        ("write_side.kitchen.saga", "from ...projections import orders"),
        ("write_side.kitchen.saga", "import importlib\nimportlib.import_module('read_side.api')"),
        (
            "write_side.kitchen.saga",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import devstack.run",
        ),
        ("kernel.relay", "from write_side.orders.settings import OrdersSettings"),
        ("projections.orders", "from write_side.orders.relay import to_contract"),
        ("read_side.api", "from write_side.orders.domain import Order"),
        ("kernel.relay", "from projections.registry import PROJECTIONS"),
        ("kernel.api", "import devstack.run"),
        ("kernel.replay", "from operations import replay"),
        ("read_side.api", "from projections.orders import ORDERS"),
        ("contracts.orders", "from kernel.errors import DomainError"),
    ],
)
def test_a_crossing_import_is_found(module: str, source: str) -> None:
    assert violations(source, module) != []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("write_side.kitchen.saga", "from write_side.kitchen.domain import Ticket"),
        ("write_side.kitchen.saga", "from .domain import Ticket\nfrom . import application"),
        ("write_side.kitchen.saga", "from kernel.saga import saga_worker"),
        ("write_side.kitchen.saga", "from contracts import accounting, consumers"),
        ("write_side.kitchen.saga", "import faust\nfrom uuid import UUID"),
        ("projections.worker", "from kernel.kafka import reliable_producer"),
        ("read_side.api", "from read_side.orders import Order\nfrom contracts import orders"),
        ("read_side.api", "from kernel.auth import Caller, install_auth"),
        ("read_side.api", "from kernel.problems import problem"),
        ("read_side.api", "from kernel.read_models import LiveCollections"),
        ("kernel.relay", "from kernel.kafka import reliable_producer"),
    ],
)
def test_an_allowed_import_passes(module: str, source: str) -> None:
    assert violations(source, module) == []
