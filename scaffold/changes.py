"""A generation's changes to the repository, applied all or nothing.

`Changes` holds the new files (path → text) and the insertions into a domain's own
files, each at a `Place` found with `ast` (a class's or function's end, a list's last
item, ...): no file carries a marker for them. `apply` checks everything first (no new
file exists yet, every place is there), then writes; if anything fails half way, including a later step run inside
the transaction, every touched file gets its old bytes back and every created file
and directory is removed.
"""

from __future__ import annotations

import ast
import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


class ScaffoldError(Exception):
    """The generation cannot go on; nothing was changed."""


@dataclass(frozen=True)
class Place:
    """Where in a Python file a piece goes, found with `ast` (no marker in the file).

    ``kind`` is one of:

    - ``after-imports``: after the module's last top-level import;
    - ``before``: just above the top-level class, function or assignment ``name``;
    - ``end-of``: at the end of the body of the class or function ``name`` (a dotted
      path for a nested one);
    - ``before-last``: above the last statement of the function ``name`` (its ``return``
      or ``raise``);
    - ``end-of-if``: after the if/elif chain that opens the body of function ``name``
      (the piece starts with ``elif``);
    - ``item-of``: a new item at the end of a list, tuple or dict (``key: value``): the
      one assigned to the top-level ``name``, or (``name`` as ``call:0``) the one passed
      as the first positional argument to the call assigned to ``call``.
    """

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}".strip()


@dataclass(frozen=True)
class Insertion:
    """``text`` goes at ``place`` in the file at ``path``, indented to fit there; without a
    place, it is appended at the end of the file."""

    path: str
    text: str
    place: Place | None = None


def _node(body: list[ast.stmt], dotted: str, path: str) -> ast.stmt:
    """The statement of ``body`` that defines or assigns ``dotted`` (``Outer.inner``)."""
    first, _, rest = dotted.partition(".")
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        if first in names:
            if not rest:
                return node
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                return _node(node.body, rest, path)
    raise ScaffoldError(f"{path}: no {dotted} to add to (restore it to use the generator)")


def _indented(text: str, indent: str) -> str:
    return "".join(f"{indent}{line}\n" if line else "\n" for line in text.splitlines())


def _first_line(node: ast.stmt) -> int:
    """The node's first line, its decorators included (1-based)."""
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _offset(lines: list[str], line: int, column: int) -> int:
    """The character offset of ``ast``'s (line, UTF-8 byte column) in the source."""
    return sum(len(text) for text in lines[: line - 1]) + len(
        lines[line - 1].encode()[:column].decode()
    )


def _sequence(tree: ast.Module, place: Place, path: str) -> ast.List | ast.Tuple | ast.Dict:
    name, _, position = place.name.partition(":")
    value = getattr(_node(tree.body, name, path), "value", None)
    if position:
        arguments = value.args if isinstance(value, ast.Call) else []
        value = arguments[int(position)] if int(position) < len(arguments) else None
    if not isinstance(value, ast.List | ast.Tuple | ast.Dict):
        raise ScaffoldError(f"{path}: {place.name} is not a list, tuple or dict to add to")
    return value


def inserted(source: str, insertion: Insertion) -> str:
    """``source`` with ``insertion.text`` placed; the result is formatted afterwards."""
    text, place, path = insertion.text, insertion.place, insertion.path
    if place is None:
        return (
            source
            + ("" if source.endswith("\n") or not source else "\n")
            + (text if text.endswith("\n") else text + "\n")
        )
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    if place.kind == "item-of":
        sequence = _sequence(tree, place, path)
        items = sequence.values if isinstance(sequence, ast.Dict) else sequence.elts
        if items:
            last = items[-1]
            assert last.end_lineno is not None and last.end_col_offset is not None
            at = _offset(lines, last.end_lineno, last.end_col_offset)
            return f"{source[:at]},\n{text.strip().rstrip(',')}{source[at:]}"
        at = _offset(lines, sequence.lineno, sequence.col_offset) + 1  # after the bracket
        return f"{source[:at]}\n{text.strip().rstrip(',')},\n{source[at:]}"
    if place.kind == "after-imports":
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        index, indent = (imports[-1].end_lineno or 0) if imports else 0, ""
    else:
        node = _node(tree.body, place.name, path)
        body = getattr(node, "body", [])
        if place.kind == "before":
            index, indent = _first_line(node) - 1, ""
        elif place.kind == "end-of" and body:
            index, indent = body[-1].end_lineno or 0, " " * body[0].col_offset
        elif place.kind == "before-last" and body:
            index, indent = _first_line(body[-1]) - 1, " " * body[-1].col_offset
        elif place.kind == "end-of-if" and body:
            chain = next((n for n in body if isinstance(n, ast.If)), None)
            if chain is None:
                raise ScaffoldError(f"{path}: {place.name} has no if/elif chain to extend")
            indent = " " * chain.col_offset
            while len(chain.orelse) == 1 and isinstance(chain.orelse[0], ast.If):
                chain = chain.orelse[0]
            if chain.orelse:
                raise ScaffoldError(f"{path}: the if/elif chain of {place.name} ends in else")
            index = chain.end_lineno or 0
        else:
            raise ScaffoldError(f"{path}: cannot add at {place}")
    return "".join([*lines[:index], "\n", _indented(text, indent), "\n", *lines[index:]])


Step = Callable[[Path, "Transaction"], None]


@dataclass
class Changes:
    files: dict[str, str] = field(default_factory=dict)
    insertions: list[Insertion] = field(default_factory=list)
    after: list[Step] = field(default_factory=list)
    """Steps run in the transaction once the files are in place (schemas, formatting)."""

    def insert(self, path: str, text: str, place: Place | None = None) -> None:
        self.insertions.append(Insertion(path, text, place))

    def describe(self) -> list[str]:
        lines = [f"create {path}" for path in sorted(self.files)]
        for insertion in self.insertions:
            where = f"at {insertion.place}" if insertion.place else "at the end"
            lines.append(f"edit   {insertion.path} ({where}):")
            lines += [f"         + {line}" for line in insertion.text.splitlines()]
        return lines

    def edited(self, root: Path) -> dict[str, str]:
        """Each file the insertions edit → its new text (in order, each on the last)."""
        texts: dict[str, str] = {}
        for insertion in self.insertions:
            if insertion.path not in texts:
                path = root / insertion.path
                if insertion.path in self.files:
                    texts[insertion.path] = self.files[insertion.path]
                elif path.is_file():
                    texts[insertion.path] = path.read_text()
                else:
                    raise ScaffoldError(f"{insertion.path} is missing; nothing was changed")
            texts[insertion.path] = inserted(texts[insertion.path], insertion)
        return texts


class Transaction:
    """Records every change so that `rollback` can undo them all."""

    def __init__(self, root: Path):
        self.root = root
        self.originals: dict[Path, bytes] = {}
        self.created: list[Path] = []

    def create(self, relative: str, text: str) -> Path:
        path = self.root / relative
        if path.exists():
            raise ScaffoldError(f"{relative} exists already; nothing was changed")
        missing = [parent for parent in path.parents if not parent.exists()]
        for directory in reversed(missing):
            directory.mkdir()
            self.created.append(directory)
        self.created.append(path)
        path.write_text(text)
        return path

    def edit(self, relative: str, text: str) -> None:
        path = self.root / relative
        self.originals.setdefault(path, path.read_bytes())
        path.write_text(text)

    def remove(self, relative: str) -> None:
        """Delete a file or a directory tree; `rollback` writes every file of it back."""
        path = self.root / relative
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            self.originals.setdefault(file, file.read_bytes())
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    @contextlib.contextmanager
    def watching(self, directory: Path) -> Iterator[None]:
        """What a subprocess creates or changes under ``directory`` is rolled back too."""
        existed = directory.exists()
        before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()} if existed else {}
        known = set(directory.rglob("*")) if existed else set()
        try:
            yield
        finally:
            if not existed:
                if directory.exists():
                    self.created.append(directory)
            else:
                self.created += sorted(set(directory.rglob("*")) - known)
                for path, content in before.items():
                    self.originals.setdefault(path, content)

    def rollback(self) -> None:
        for path, content in self.originals.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        for path in reversed(self.created):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def check(root: Path, changes: Changes) -> None:
    """Refuse before touching anything: an existing file, a place that is not there."""
    existing = sorted(path for path in changes.files if (root / path).exists())
    if existing:
        raise ScaffoldError(
            f"these files exist already: {', '.join(existing)}; nothing was changed"
        )
    changes.edited(root)


@contextlib.contextmanager
def transaction(root: Path) -> Iterator[Transaction]:
    """Undo everything recorded if the block raises (Ctrl-C included)."""
    recorded = Transaction(root)
    try:
        yield recorded
    except BaseException:
        recorded.rollback()
        raise


def apply(root: Path, changes: Changes) -> None:
    check(root, changes)
    with transaction(root) as recorded:
        edited = changes.edited(root)
        for relative, text in sorted(changes.files.items()):
            recorded.create(relative, edited.pop(relative, text))
        for relative, text in edited.items():
            recorded.edit(relative, text)
        for step in changes.after:
            step(root, recorded)
