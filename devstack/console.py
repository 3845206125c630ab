"""What `cqrs run` shows on the console, and where each process's output goes instead.

Every Procfile process writes its output to ``<var>/log/<process>.log`` (the Procfile
is run with each command's output redirected there: Faust's banners, uvicorn's access
log, tracebacks). Honcho's own lines are read here: they all go to
``<var>/log/honcho.log``; the console shows only the processes of ``SHOWN_ON_CONSOLE``
(the demo's summary, also in its log file) and each process that stops on its own: its
name, its exit code and the last lines of its log. No terminal escape code reaches the
console.
"""

from __future__ import annotations

import re
import shlex
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

SHOWN_ON_CONSOLE = frozenset({"demo"})
"""Processes whose output the console shows too (the demo prints a summary for people)."""
LOG_TAIL_LINES = 15
ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
"""ANSI/VT100 escape sequences: CSI (colours, cursor), OSC (titles, links), and 2-byte ones."""
HONCHO_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<name>\S+?)\s*\| ?(?P<text>.*)$")
STOPPED = re.compile(r"^(?P<process>\S+) stopped \(rc=(?P<code>-?\d+)\)$")
PROCFILE_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):\s*(?P<command>.*)$")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences or other control characters (tabs kept)."""
    text = ESCAPES.sub("", text)
    return "".join(c for c in text if c == "\t" or c >= " " and c != "\x7f")


def log_path(log_dir: Path, process: str) -> Path:
    return log_dir / f"{process}.log"


def with_log_files(procfile_text: str, log_dir: Path) -> str:
    """The Procfile with each process's output appended to its log file.

    ``exec >>LOG 2>&1`` first: the shell's own output goes there from then on, so the
    redirection holds whatever the command is (``exec`` itself, a pipeline, a list).
    The console's processes are left as they are: the runner copies their lines to
    their log file itself.
    """
    lines = []
    for line in procfile_text.splitlines():
        match = PROCFILE_LINE.match(line)
        if match is None or match["name"] in SHOWN_ON_CONSOLE:
            lines.append(line)
            continue
        log = shlex.quote(str(log_path(log_dir, match["name"])))
        lines.append(f"{match['name']}: exec >>{log} 2>&1; {match['command']}")
    return "\n".join(lines) + "\n"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a log, as plain text ([] if there is none)."""
    try:
        with path.open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode(errors="replace")
    except OSError:
        return []
    return [plain(line) for line in text.splitlines()[-lines:]]


class HonchoOutput:
    """Reads honcho's output in a thread of its own: everything to ``honcho.log``, to the
    console only what a person needs (``echo``: a shown process's lines; ``say``: the
    runner's). ``stopping()`` is called once the runner
    stops the processes itself: their exits are expected then, not reported."""

    def __init__(
        self,
        stream: IO[bytes],
        log_dir: Path,
        say: Callable[[str], None],
        echo: Callable[[str], None],
    ):
        self.stream = stream
        self.log_dir = log_dir
        self.say = say  # the runner's own lines
        self.echo = echo  # a process's lines, as they are
        self.failed: list[tuple[str, int]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="honcho-output", daemon=True)

    def start(self) -> HonchoOutput:
        self._thread.start()
        return self

    def stopping(self) -> None:
        self._stopping.set()

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    def _read(self) -> None:
        with log_path(self.log_dir, "honcho").open("a", encoding="utf-8") as honcho_log:
            for raw in self.stream:
                line = raw.decode(errors="replace").rstrip("\n")
                honcho_log.write(line + "\n")
                honcho_log.flush()
                self._show(line)

    def _show(self, line: str) -> None:
        match = HONCHO_LINE.match(plain(line))
        if match is None:
            return
        process, text = _process_name(match["name"]), match["text"]
        if process in SHOWN_ON_CONSOLE:
            with log_path(self.log_dir, process).open("a", encoding="utf-8") as copy:
                copy.write(text + "\n")
            self.echo(f"{process} | {text}".rstrip())
            return
        if process != "system" or self._stopping.is_set():
            return
        stopped = STOPPED.match(text.strip())
        if stopped is None or self.failed:  # only the first: honcho stops the others
            return
        name, code = _process_name(stopped["process"]), int(stopped["code"])
        self.failed.append((name, code))
        log = log_path(self.log_dir, name)
        self.say(f"error: process {name} exited with code {code}; the last lines of {log}:")
        for last in tail(log):
            self.say(f"  {last}")
        self.say("stopping everything")


def _process_name(honcho_name: str) -> str:
    """``orders-api.1`` → ``orders-api`` (honcho numbers each process of a name)."""
    return re.sub(r"\.\d+$", "", honcho_name)
