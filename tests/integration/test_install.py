"""`make venv`'s editable install of the project says nothing: no setuptools warning."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS_NOISE = ("Warning", "warning", "Editable installation", "!!")


def test_the_editable_install_warns_of_nothing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in found["packages"]["find"]["include"]:
        source = ROOT / package.removesuffix("*")
        shutil.copytree(source, project / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv"], check=True)
    python = tmp_path / "venv" / "bin" / "python"

    # As the Makefile installs, without the dependencies (this venv has them).
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "-e", "."],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert installed.returncode == 0, installed.stderr[-3000:]
    said = [
        line
        for line in (installed.stdout + installed.stderr).splitlines()
        if "is ignored: it is neither a file nor a directory" not in line  # this pip's config
    ]
    assert not [line for line in said if any(noise in line for noise in SETUPTOOLS_NOISE)], said
    imported = subprocess.run(
        [python, "-c", "import kernel, scaffold; print(kernel.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == str(project / "kernel" / "__init__.py")
