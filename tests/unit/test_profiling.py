"""The benchmarks' profiles attribute the kernel's code to the project."""

from pathlib import Path

from bench.profiling import where
from devstack.servers import REPO_ROOT


def frame(function: str, path: Path) -> str:
    """A pyinstrument frame identifier: function, file and line, NUL-separated."""
    return f"{function}\x00{path}\x0012"


def test_each_package_of_the_product_is_the_projects_own():
    for package, module in (
        ("kernel", "relay.py"),
        ("write_side", "orders/api.py"),
        ("operations", "replay.py"),
    ):
        assert where(frame("f", REPO_ROOT / package / module)) == f"{package} (this project)"
