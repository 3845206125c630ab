"""Helpers for group-commit tests: batches whose arrival order is known."""

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tests.support import wait_for
from write_side.kernel.application import ServiceApplication


class HeldWriter:
    """Holds an Application's writer in a turn; commands queue behind it in a known order."""

    def __init__(self, app: ServiceApplication, pool: ThreadPoolExecutor):
        self.app = app
        self.pool = pool
        self.release = threading.Event()
        started = threading.Event()
        app.group_commit.max_turn = 60  # the holding turn must not be detached

        def hold() -> None:
            started.set()
            self.release.wait(timeout=60)

        self.holding = pool.submit(app.group_commit.run, hold)
        assert started.wait(timeout=30), "the writer never gave the hold its turn"

    def queue(self, command: Callable[[], Any]) -> Future:
        """Queue the command behind those queued before (its arrival is known)."""
        waiting = self.app.group_commit.waiting()
        future = self.pool.submit(command)
        wait_for(lambda: self.app.group_commit.waiting() == waiting + 1, message="queued")
        return future

    def let_go(self) -> None:
        self.release.set()
        self.holding.result(timeout=30)


def outcome(future: Future) -> Any:
    """The command's answer: its result, or its exception."""
    try:
        return future.result(timeout=60)
    except Exception as error:  # noqa: BLE001 - the answer under test
        return error
