"""`Process.stop` ends a process that was stopped (SIGSTOP) with its SIGTERM, not a SIGKILL;
one that does not stop in time leaves its stacks in its log."""

import signal
import sys
import time
from pathlib import Path

from devstack.processes import Process
from tests.support import wait_for

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


STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def hang_here():
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
hang_here()
"""


def test_a_process_that_does_not_stop_in_time_leaves_where_it_hung_in_its_log(tmp_path: Path):
    process = Process("stubborn", [sys.executable, "-c", STUBBORN], {}, tmp_path)
    wait_for(lambda: "ready" in process.log(), message=process.log())

    process.stop(timeout=0.5)

    assert not process.alive()
    log = process.log()
    assert "Fatal Python error: Aborted" in log, log
    assert "in hang_here" in log, log
