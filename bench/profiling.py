"""Profiles of each scenario's hot path (pyinstrument), boiled down to what dominates.

A profile is a pyinstrument session: taken in-process around the measured coroutine
(`profiled`), or by running a whole process under pyinstrument
(`devstack.processes.python_module(profile=...)`) and loading the session it saved.
`summary` attributes every sampled moment to where it was spent: a library, the
project's own code, the interpreter's standard library, or waiting (an ``await`` with
nothing to run, or the event loop idle in ``select``).
"""

import os
import re
import sysconfig
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from pyinstrument import Profiler
from pyinstrument.session import Session

T = TypeVar("T")

PRODUCT_PACKAGES = ("kernel", "write_side", "read_side", "projections", "contracts", "operations")
"""What the hot spots are looked for in (the code the processes run)."""
PROJECT_PACKAGES = (*PRODUCT_PACKAGES, "devstack", "bench")
_SITE_PACKAGE = re.compile(r"[/\\]site-packages[/\\]([A-Za-z0-9_]+)")
_STDLIB = sysconfig.get_paths()["stdlib"]
_IDLE_FUNCTIONS = {"select", "poll", "epoll", "_run_once"}
_SAMPLE_INTERVAL = 0.001  # seconds


async def profiled(work: Callable[[], Awaitable[T]], save_to: Path) -> tuple[T, Session]:
    """Run `work` under pyinstrument (this task only, awaits counted as waiting)."""
    profiler = Profiler(interval=_SAMPLE_INTERVAL, async_mode="enabled")
    profiler.start()
    try:
        result = await work()
    finally:
        session = profiler.stop()
    save_to.parent.mkdir(parents=True, exist_ok=True)
    session.save(save_to)
    return result, session


def load(path: Path) -> Session | None:
    """A session a profiled process saved (None if it saved none)."""
    return Session.load(path) if path.is_file() else None


def where(frame_identifier: str) -> str:
    """The place one leaf frame belongs to: `waiting`, a package or `stdlib:<module>`."""
    function, _, rest = frame_identifier.partition("\x00")
    path = rest.partition("\x00")[0]
    if function in ("[await]", "[self]") or not path:
        return (
            "waiting (await: I/O, a timer or a worker thread)"
            if function == "[await]"
            else "interpreter"
        )
    if function in _IDLE_FUNCTIONS and ("selectors" in path or "asyncio" in path):
        return "waiting (event loop idle)"
    if match := _SITE_PACKAGE.search(path):
        return match.group(1)
    for package in PROJECT_PACKAGES:
        if f"{os.sep}{package}{os.sep}" in path:
            return f"{package} (this project)"
    if path.startswith(_STDLIB):
        module = Path(path).relative_to(_STDLIB).parts[0].removesuffix(".py")
        return f"stdlib:{module}"
    return "other"


def _records(session: Session) -> list[tuple[list[str], float]]:
    """The samples, less those taken while importing modules (a process's start-up)."""
    return [
        (stack, seconds)
        for stack, seconds in session.frame_records
        if not any(identifier.startswith("_find_and_load\x00") for identifier in stack)
    ]


def leaf_times(session: Session) -> dict[str, float]:
    """Seconds per place, from every sample's innermost frame."""
    spent: dict[str, float] = defaultdict(float)
    for stack, seconds in _records(session):
        spent[place_of(stack)] += seconds
    return spent


def place_of(stack: list[str]) -> str:
    """Where a sample's time went: its innermost frame with Python source, so a built-in
    (C) function counts for the Python code that called it."""
    for identifier in reversed(stack):
        if "\x00<built-in>\x00" not in identifier:
            return where(identifier)
    return "interpreter"


def hottest_project_functions(session: Session, top: int = 3) -> list[tuple[str, float]]:
    """Busy time by the innermost function of the project's own code on each sample's
    stack: the project code whose work (its own, and the libraries it calls) costs most.
    Outer wrappers (`serve`, `run`) get only what they do themselves."""
    spent: dict[str, float] = defaultdict(float)
    for stack, seconds in _records(session):
        if place_of(stack).startswith("waiting"):
            continue
        for identifier in reversed(stack):
            function, _, rest = identifier.partition("\x00")
            path = rest.partition("\x00")[0]
            if function not in ("<module>", "<listcomp>", "<genexpr>", "<lambda>") and any(
                f"{os.sep}{package}{os.sep}" in path for package in PRODUCT_PACKAGES
            ):
                spent[f"{Path(path).parent.name}/{Path(path).name}:{function}"] += seconds
                break
    return sorted(spent.items(), key=lambda item: -item[1])[:top]


def summary(session: Session | None, top: int = 5) -> str:
    """One line: where the time went (share of all samples), and the busiest project code."""
    spent = leaf_times(session) if session is not None else {}
    total = sum(spent.values())
    if session is None or not total:
        return "no profile was recorded"
    shares = ", ".join(
        f"{place} {seconds / total:.0%}"
        for place, seconds in sorted(spent.items(), key=lambda item: -item[1])[:top]
    )
    busy = total - sum(s for place, s in spent.items() if place.startswith("waiting"))
    hot = hottest_project_functions(session)
    hot_text = "; ".join(f"`{name}` {seconds / busy:.0%}" for name, seconds in hot) if busy else ""
    text = f"time by place: {shares}"
    if hot_text:
        text += f". Busiest project code (share of busy time, innermost project frame): {hot_text}"
    return text + f" ({total:.1f} s of samples, start-up imports left out)."
