"""Instructions counted by callgrind (valgrind): a cost that holds whatever else the
machine is doing, where seconds and CPU time on these shared 2-core machines move by
10 % or more between two runs of the same thing.

A workload is run twice, with a small and a large count of the same operation; the
difference in instructions over the difference in counts is one operation's cost (the
start-up, imports included, is the same in both and drops out). Threads run one at a
time under valgrind, so what the operations cost is counted, not how they overlap.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

_COLLECTED = re.compile(r"Collected : (\d+)")
TIMEOUT = 1200.0


def available() -> bool:
    return shutil.which("valgrind") is not None


def instructions(argv: list[str], env: dict[str, str], work: Path, name: str) -> int:
    """The instructions ``argv`` executed (all its threads), run under callgrind."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"{name}.callgrind.log"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={work / f'{name}.callgrind.out'}",
        f"--log-file={log}",
        *argv,
    ]
    done = subprocess.run(
        command,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=TIMEOUT,
        check=False,
    )
    found = _COLLECTED.search(log.read_text(errors="replace")) if log.exists() else None
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{name}: exit code {done.returncode} under callgrind; {log}\n{tail}")
    return int(found.group(1))


def per_operation(
    module: str,
    args: list[str],
    env_of: Callable[[int], dict[str, str]],
    work: Path,
    name: str,
    few: int,
    many: int,
) -> float:
    """Instructions per operation of ``python -m module *args COUNT``, from a run with
    ``few`` operations and one with ``many``, each in the environment ``env_of(COUNT)``."""
    python = [sys.executable, "-m", module, *args]
    small = instructions([*python, str(few)], env_of(few), work, f"{name}-{few}")
    large = instructions([*python, str(many)], env_of(many), work, f"{name}-{many}")
    return (large - small) / (many - few)
