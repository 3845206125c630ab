"""`Process.stop` ends a process that was stopped (SIGSTOP) with its SIGTERM, not a SIGKILL."""

import signal
import sys
import time
from pathlib import Path

from devstack.processes import Process

SLEEPER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
time.sleep(60)
"""


def test_a_stopped_process_gets_its_sigterm(tmp_path: Path) -> None:
    process = Process("sleeper", [sys.executable, "-c", SLEEPER], {}, tmp_path)
    deadline = time.monotonic() + 20
    while "ready" not in process.log_path.read_text():
        assert time.monotonic() < deadline, "the sleeper did not start"
        time.sleep(0.02)
    process.popen.send_signal(signal.SIGSTOP)

    process.stop(timeout=20)

    # 0: its SIGTERM handler ran. Without the SIGCONT the SIGTERM waits for the
    # SIGKILL that follows the timeout (-9).
    assert process.popen.returncode == 0
