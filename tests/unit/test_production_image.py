"""The production image (`pip install .`, Dockerfile) installs no development or benchmark
dependency, so nothing it runs may import one: each module the Procfile and compose
start, and the `cqrs` command the image's commands call, is imported in a fresh Python
whose import system refuses the modules of every distribution only `[dev]` brings.

The installed environment is the dev one (the tests need it); the refused modules are
found from the distributions' metadata: those `[dev]` needs, transitively, that the
production dependencies do not.
"""

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE_COMMANDS = ("devstack.cli",)
"""Besides the Procfile's processes: `cqrs` (`cqrs topics`, `cqrs gateway config`, the
operations). Compose's services are the Procfile's processes (`cqrs generate`), the demo
included where there is one."""

BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class DevOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is a development-only distribution's module")
        return None
sys.meta_path.insert(0, DevOnly())
import importlib
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, with theirs, as installed here."""
    found: set[str] = set()
    pending = [(Requirement(text), frozenset()) for text in requirements]
    while pending:
        requirement, _ = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not for this platform
        found.add(name)
        extras = requirement.extras or {""}
        for text in distribution.requires or []:
            child = Requirement(text)
            if child.marker is None or any(
                child.marker.evaluate({**default_environment(), "extra": extra}) for extra in extras
            ):
                pending.append((child, frozenset()))
    return found


def dev_only_modules() -> set[str]:
    production = closure(PYPROJECT["project"]["dependencies"])
    dev = closure(PYPROJECT["project"]["optional-dependencies"]["dev"])
    dev_only = dev - production
    return {
        module
        for module, distributions in metadata.packages_distributions().items()
        if all(canonicalize_name(d) in dev_only for d in distributions)
    }


def procfile_modules() -> list[str]:
    """The module each Procfile process runs (uvicorn's factory, faust's app, python -m)."""
    modules = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        command = line.partition(":")[2]
        found = re.search(r"uvicorn (\S+):|faust -A (\S+):|python -m (\S+)", command)
        assert found, f"no module in the Procfile line {line!r}"
        modules.append(next(group for group in found.groups() if group))
    return modules


def test_the_dev_only_modules_are_found() -> None:
    blocked = dev_only_modules()
    for module in ("pytest", "honcho", "matplotlib", "copier", "noida_db", "schemathesis"):
        assert module in blocked or not _installed(module), module
    for module in ("fastapi", "faust", "aiohttp", "pymongo"):  # aiohttp: faust needs it
        assert module not in blocked, module


def test_what_the_image_runs_imports_no_dev_only_distribution() -> None:
    modules = [*procfile_modules(), *IMAGE_COMMANDS]
    assert "read_side.api" in modules
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(dev_only_modules())), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_blocker_refuses_a_dev_only_module() -> None:
    """Without this, a blocker that refuses nothing would pass the test above."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, "honcho,pytest", "json", "pytest"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "pytest is a development-only distribution's module" in result.stderr


def _installed(module: str) -> bool:
    return module in metadata.packages_distributions()
