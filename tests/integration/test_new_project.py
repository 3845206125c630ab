"""`copier copy` of this repository makes a new project (copier.yml, ADR 18).

Without the reference saga, the new project is the template without the saga's files
(`scaffold.prune.saga_files`) and with its generated files written again: no other file
differs, none names the saga's files or modules, no Markdown link dangles. It passes `make
lint`'s checks, collects every kernel test (on their own tallies domain), and a domain
generated in it passes its own unit tests with the kernel's unit, group commit and relay
tests on SQLite. With it, the new project is this repository's files, byte for byte.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from copier import run_copy

from devstack.servers import REPO_ROOT
from scaffold.generated import GENERATED
from scaffold.prune import saga_files
from tests.integration.test_new_domain import repository_copy

TEMPLATE_ONLY = {"copier.yml", "tests/integration/test_new_project.py"}
"""In the template, not in the projects it makes (copier.yml's `_exclude`)."""
KERNEL_TESTS = (
    "tests/unit/test_group_commit_in_memory.py",
    "tests/unit/test_kernel_dead_letter_kinds.py",
    "tests/unit/test_kernel_example_contracts.py",
    "tests/unit/test_kernel_replay_logic.py",
    "tests/unit/test_metadata.py",
    "tests/unit/test_retries.py",
    "tests/integration/test_group_commit.py",
    "tests/integration/test_handle_batches.py",
    "tests/integration/test_kernel_dead_letters.py",
    "tests/integration/test_kernel_projection.py",
    "tests/integration/test_kernel_read_your_writes.py",
    "tests/integration/test_kernel_replay.py",
    "tests/integration/test_relay.py",
    "tests/integration/test_store.py",
)
"""The kernel's tests (on the domain of tests/kernel_example): a project without the saga
keeps them, and that domain, as they are, and runs them on SQLite."""
REWRITTEN = {*GENERATED, "contracts/schemas/schemas.lock"}
"""The generated files: the only ones a project without the saga has other than the template."""
ABOUT_THE_SAGA = {
    "scaffold/prune.py": "it removes them (the post-copy task runs it)",
    "scaffold/generated.py": "it runs the demo where a project has a devstack/demo.py",
    "tests/unit/test_prune.py": "a scratch project with the saga, to prune",
    "tests/unit/test_service_boundaries.py": "imports it must refuse, as strings",
    "tests/unit/test_gateway_config.py": "a sample Procfile",
    "tests/integration/test_new_project.py": "this test",
}
"""Files that may name the saga's files in text, never import them (each with the reason)."""
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def names_of(removed: list[str]) -> re.Pattern[str]:
    """A path of a removed file or folder, or the dotted name of a removed module."""
    names = set()
    for path in removed:
        names.add(re.escape(path))
        if path.endswith(".py") or "." not in path.rsplit("/", 1)[-1]:
            names.add(re.escape(path.removesuffix(".py").replace("/", ".")))
    return re.compile(rf"(?<![\w./-])(?:{'|'.join(sorted(names))})(?![\w-])")


def imported(source: str) -> set[str]:
    """Every module a Python source imports, and each ``from`` import's names under it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def dangling_links(project: Path, kept: dict[str, bytes]) -> list[str]:
    """Every relative Markdown link whose target is not in the project."""
    found = []
    for path, data in kept.items():
        if not path.endswith(".md"):
            continue
        for target in LINK.findall(data.decode("utf-8", "replace")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (project / path).parent.joinpath(target).exists():
                found.append(f"{path} → {target}")
    return found


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This repository's files, as a plain directory (not a git repository)."""
    source = repository_copy(tmp_path_factory.mktemp("template"))
    for extra in (".venv-secantus", ".mypy_cache"):
        path = source / extra
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
    return source


def files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def run_in(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    failures = result.stdout.partition("= FAILURES =")[2].partition("short test summary")[0]
    assert result.returncode == 0, (
        f"{argv}: {failures[:6000]}{result.stdout[-4000:]}{result.stderr[-2000:]}"
    )
    return result


def test_with_the_reference_saga_the_project_is_the_template_byte_for_byte(
    template: Path, tmp_path: Path
) -> None:
    project = tmp_path / "shop"

    run_copy(
        str(template),
        project,
        data={"reference_saga": True},
        defaults=True,
        unsafe=True,  # copier asks for `--trust` for any template with tasks
        quiet=True,
    )

    expected = {path: data for path, data in files(template).items() if path not in TEMPLATE_ONLY}
    assert files(project) == expected
    assert (project / "scaffold/templates/domain/read_side/{{ domain }}.py.jinja").exists()


def test_without_the_saga_the_project_passes_its_checks_and_a_generated_domain_its_tests(
    template: Path, tmp_path: Path
) -> None:
    project = tmp_path / "shop"

    run_copy(
        str(template),
        project,
        data={"reference_saga": False},
        defaults=True,
        unsafe=True,  # `--trust`: the post-copy task runs the prune
        quiet=True,
    )

    removed = saga_files(template)
    assert "write_side/orders" in removed and "tests/reference_saga" in removed
    assert not [path for path in removed if (project / path).exists()]
    assert not list((project / "contracts" / "schemas").glob("orders.*"))
    kept = files(project)
    assert not TEMPLATE_ONLY & set(kept)
    template_files = files(template)
    edited = [p for p, data in kept.items() if p not in REWRITTEN and template_files[p] != data]
    assert edited == [], "a project without the saga edits no file but the generated ones"
    assert "demo" not in (project / "Procfile").read_text()
    naming = names_of(removed)
    for path, data in kept.items():
        if path.endswith(".md") or path.startswith("scaffold/templates/"):
            continue  # prose (its links are checked below); the generator's own templates
        text = data.decode("utf-8", "replace")
        assert "cqrs-reference-saga" not in text and "cqrs-scaffold:" not in text, path
        if path.endswith(".py"):
            modules = " ".join(sorted(imported(text)))
            assert not naming.search(modules), f"{path} imports {naming.search(modules)}"
        if path not in ABOUT_THE_SAGA:
            assert not naming.search(text), f"{path} names {naming.search(text)}"
    assert dangling_links(project, kept) == []
    for path in (
        "kernel/store.py",
        "Makefile",
        "scaffold/generate.py",
        "tests/integration/kafka_reading.py",  # the relay's tests read their topic with it
        *KERNEL_TESTS,
        *(path for path in template_files if path.startswith("tests/kernel_example/")),
    ):
        assert kept[path] == template_files[path]

    (project / ".venv-secantus").symlink_to(os.path.realpath(REPO_ROOT / ".venv-secantus"))
    if (REPO_ROOT / ".mypy_cache").is_dir():  # as in test_new_domain: mypy redoes only changes
        shutil.copytree(REPO_ROOT / ".mypy_cache", project / ".mypy_cache")
    run_in(project, "-m", "devstack", "contracts", "check")
    run_in(project, "-m", "devstack", "generate", "--check")
    collected = run_in(project, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider")
    kept_tests = [  # every test module but the saga's: `make test` collects and runs them
        path
        for path in template_files
        if path.startswith("tests/")
        and not path.startswith("tests/reference_saga/")
        and path.rsplit("/", 1)[-1].startswith("test_")
        and path.endswith(".py")
        and path not in TEMPLATE_ONLY
    ]
    assert set(KERNEL_TESTS) <= set(kept_tests)
    for path in kept_tests:
        assert f"{path}::" in collected.stdout, path

    refused = subprocess.run(
        [sys.executable, "-m", "scaffold.prune"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "has no reference saga" in refused.stdout

    run_in(
        project,
        *("-m", "devstack", "new-domain", "shipments", "--aggregate", "Shipment"),
        *("--field", "restaurant_id:str", "--field", "total_cents:int"),
    )
    # `make lint`'s checks once, on the project and the domain generated in it.
    run_in(project, "-m", "ruff", "check", ".")
    run_in(project, "-m", "ruff", "format", "--check", ".")
    run_in(project, "-m", "mypy")
    assert (project / "tests" / "unit" / "test_shipment.py").is_file()
    tests = run_in(
        project,
        *("-m", "pytest", "-q", "-rp", "-p", "no:cacheprovider", "-m", "not postgres"),
        *("tests/unit", *(path for path in KERNEL_TESTS if path.startswith("tests/integration/"))),
    )
    assert " passed" in tests.stdout
    for test in (  # the relay's guarantees, without the saga (-rp lists each test passed)
        "test_relay_publishes_every_event_in_order_with_cloudevents_headers[sqlite]",
        "test_relay_keeps_its_position_when_the_broker_does_not_acknowledge[sqlite]",
        "test_relay_killed_and_restarted_mid_stream_loses_nothing[sqlite]",
        "test_the_setting_decides_which_majors_the_relay_publishes[sqlite-transition]",
        "test_the_setting_decides_which_majors_the_relay_publishes[sqlite-after-transition]",
    ):
        assert f"PASSED tests/integration/test_relay.py::{test}" in tests.stdout
    for test in (  # the Faust workers' batches, acknowledged once handled
        "test_every_batch_is_handled_in_order_and_then_committed",
        "test_a_batch_taken_while_the_one_before_is_handled_commits_neither",
        "test_an_error_of_the_handler_ends_the_agent_at_once_and_commits_nothing",
    ):
        assert f"PASSED tests/integration/test_handle_batches.py::{test}" in tests.stdout
    for module, test in (  # the projection runtime, replay and dead letters on the tallies
        (
            "test_kernel_projection",
            "test_poison_messages_go_to_the_dead_letter_topic_with_their_reason",
        ),
        ("test_kernel_replay", "test_a_rebuild_switches_and_the_live_side_follows"),
        ("test_kernel_dead_letters", "test_a_dead_letter_republished_after_the_fix_is_consumed"),
    ):
        assert f"PASSED tests/integration/{module}.py::{test}" in tests.stdout
