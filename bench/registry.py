"""Finds the scenarios: every module in `bench/scenarios/` with a `run(context)` function
(an ``async def run`` runs in an event loop of its own).

Adding a scenario is adding a module there; nothing else is edited. Its name on the
command line is the module's name with ``-`` or ``_`` (``write_path``, ``write-path``);
the first line of its docstring describes it in ``--list``. Scenarios run in name order.
"""

import asyncio
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bench import scenarios
from bench.scenario import BenchContext, ScenarioResult


class UnknownScenario(LookupError):
    """A name on the command line matches no module in bench/scenarios/."""


@dataclass(frozen=True)
class Scenario:
    name: str  # the module's name, e.g. "write_path"
    description: str
    run: Callable[[BenchContext], ScenarioResult]


def _scenario(module: ModuleType) -> Scenario | None:
    run = getattr(module, "run", None)
    if not callable(run):
        return None
    name = module.__name__.rsplit(".", 1)[1]
    description = (module.__doc__ or name).strip().splitlines()[0]
    if inspect.iscoroutinefunction(run):
        run = _in_event_loop(run)
    return Scenario(name, description, run)


def _in_event_loop(
    run: Callable[[BenchContext], Coroutine[Any, Any, ScenarioResult]],
) -> Callable[[BenchContext], ScenarioResult]:
    return lambda context: asyncio.run(run(context))


def discover(package: ModuleType = scenarios) -> list[Scenario]:
    """Every scenario module of `package`, by name (private `_modules` are helpers)."""
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if (scenario := _scenario(module)) is not None:
            found.append(scenario)
    return found


def normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def select(names: list[str], available: list[Scenario]) -> list[Scenario]:
    """The scenarios named (all when none), in registry order; unknown names are an error."""
    if not names:
        return available
    by_name = {scenario.name: scenario for scenario in available}
    wanted = {normalise(name) for name in names}
    if unknown := sorted(wanted - by_name.keys()):
        raise UnknownScenario(
            f"unknown scenario(s) {', '.join(unknown)}; available: {', '.join(by_name)}"
        )
    return [scenario for scenario in available if scenario.name in wanted]
