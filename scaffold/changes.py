"""A generation's changes to the repository, applied all or nothing.

`Changes` holds the new files (path → text) and the insertions into existing files.
`apply` checks everything first (no new file exists yet, every insertion point is
there), then writes; if anything fails half way, including a later step run inside
the transaction, every touched file gets its old bytes back and every created file
and directory is removed.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "cqrs-scaffold:"


class ScaffoldError(Exception):
    """The generation cannot go on; nothing was changed."""


@dataclass(frozen=True)
class Insertion:
    """``text`` goes just above the line marked ``cqrs-scaffold: <slot>``, indented like it.

    Without a slot, ``text`` is appended at the end of the file.
    """

    path: str
    text: str
    slot: str | None = None


Step = Callable[[Path, "Transaction"], None]


@dataclass
class Changes:
    files: dict[str, str] = field(default_factory=dict)
    insertions: list[Insertion] = field(default_factory=list)
    after: list[Step] = field(default_factory=list)
    """Steps run in the transaction once the files are in place (schemas, formatting)."""

    def insert(self, path: str, text: str, slot: str | None = None) -> None:
        self.insertions.append(Insertion(path, text, slot))

    def describe(self) -> list[str]:
        lines = [f"create {path}" for path in sorted(self.files)]
        for insertion in self.insertions:
            where = f"at '{MARKER} {insertion.slot}'" if insertion.slot else "at the end"
            lines.append(f"edit   {insertion.path} ({where}):")
            lines += [f"         + {line}" for line in insertion.text.splitlines()]
        return lines


def _marker_index(lines: list[str], slot: str, path: str) -> int:
    found = [i for i, line in enumerate(lines) if f"{MARKER} {slot}" in line]
    if len(found) != 1:
        raise ScaffoldError(
            f"{path}: expected one line marked '{MARKER} {slot}', found {len(found)} "
            "(restore it to add pieces with the generator)"
        )
    return found[0]


def _inserted(original: str, insertion: Insertion) -> str:
    if insertion.slot is None:
        return (
            original
            + ("" if original.endswith("\n") or not original else "\n")
            + (insertion.text if insertion.text.endswith("\n") else insertion.text + "\n")
        )
    lines = original.splitlines(keepends=True)
    index = _marker_index(lines, insertion.slot, insertion.path)
    marker = lines[index]
    indent = marker[: len(marker) - len(marker.lstrip())]
    new = [f"{indent}{line}\n" if line else "\n" for line in insertion.text.splitlines()]
    return "".join([*lines[:index], *new, *lines[index:]])


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
    """Refuse before touching anything: an existing file, a missing insertion point."""
    existing = sorted(path for path in changes.files if (root / path).exists())
    if existing:
        raise ScaffoldError(
            f"these files exist already: {', '.join(existing)}; nothing was changed"
        )
    for insertion in changes.insertions:
        path = root / insertion.path
        if insertion.path in changes.files:
            text = changes.files[insertion.path]  # a new file that gets entries too
        elif path.is_file():
            text = path.read_text()
        else:
            raise ScaffoldError(f"{insertion.path} is missing; nothing was changed")
        if insertion.slot is not None:
            _marker_index(text.splitlines(), insertion.slot, insertion.path)


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
        for relative, text in sorted(changes.files.items()):
            recorded.create(relative, text)
        for insertion in changes.insertions:
            path = root / insertion.path
            recorded.edit(insertion.path, _inserted(path.read_text(), insertion))
        for step in changes.after:
            step(root, recorded)
