"""`cqrs remove-reference-saga`'s parts that need no copy of the repository."""

from pathlib import Path

import pytest

from devstack.cli import main
from scaffold.changes import ScaffoldError
from scaffold.prune import without_saga_blocks

M = "cqrs-reference-saga"  # not on the lines themselves: pruning this file leaves them
MARKED = f"""\
first
# {M}: begin
saga
# {M}: end
    # {M}: instead kept = "indented like the marker"
<!-- {M}: instead Markdown's text -->
-- {M}: begin
SQL
-- {M}: end
last
"""


def test_blocks_go_and_instead_lines_take_their_text() -> None:
    assert without_saga_blocks(MARKED, "file") == (
        'first\n    kept = "indented like the marker"\nMarkdown\'s text\nlast\n'
    )


def test_a_mention_of_the_marker_inside_a_line_is_text() -> None:
    text = "See `# cqrs-reference-saga: begin` in the ADR.\n"
    assert without_saga_blocks(text, "README.md") == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# cqrs-reference-saga: begin\nsaga\n", "never ends"),
        ("saga\n# cqrs-reference-saga: end\n", "did not begin"),
        ("# cqrs-reference-saga: begin\n# cqrs-reference-saga: begin\n", "inside"),
    ],
)
def test_unbalanced_markers_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ScaffoldError, match=problem):
        without_saga_blocks(text, "file")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_saga_goes_with_its_blocks_and_processes(tmp_path: Path, capsys) -> None:
    (tmp_path / "write_side" / "orders").mkdir(parents=True)
    (tmp_path / "write_side" / "orders" / "domain.py").write_text("class Order: ...\n")
    (tmp_path / "registry.py").write_text(MARKED)
    (tmp_path / "Procfile").write_text(
        "orders-api: exec uvicorn a\nquery-api: exec uvicorn b\ndemo: exec python -m c\n"
    )

    assert main(["remove-reference-saga", "--root", str(tmp_path)]) == 0

    assert not (tmp_path / "write_side" / "orders").exists()
    assert (tmp_path / "Procfile").read_text() == "query-api: exec uvicorn b\n"
    assert "saga" not in (tmp_path / "registry.py").read_text()
    assert "remove write_side/orders" in capsys.readouterr().out


def test_a_bad_marker_anywhere_changes_nothing(tmp_path: Path, capsys) -> None:
    (tmp_path / "write_side" / "orders").mkdir(parents=True)
    (tmp_path / "write_side" / "orders" / "domain.py").write_text("class Order: ...\n")
    (tmp_path / "a.py").write_text(MARKED)
    (tmp_path / "b.py").write_text("# cqrs-reference-saga: begin\n")
    before = snapshot(tmp_path)

    assert main(["remove-reference-saga", "--root", str(tmp_path)]) == 2

    assert "b.py:1: a block begins and never ends" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


def test_a_project_without_the_saga_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["remove-reference-saga", "--root", str(tmp_path)]) == 2
    assert "has no reference saga" in capsys.readouterr().out
