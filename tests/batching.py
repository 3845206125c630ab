"""Helpers for group-commit tests: batches whose arrival order is known."""

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import sqlalchemy
from eventsourcing.application import AggregateNotFoundError

from kernel.application import ServiceApplication
from tests.support import wait_for


class HeldWriter:
    """Holds an Application's writer in a turn; commands queue behind it in a known order."""

    def __init__(self, app: ServiceApplication, pool: ThreadPoolExecutor):
        self.app = app
        self.pool = pool
        self.release = threading.Event()
        started = threading.Event()
        app.group_commit.max_turn = 60  # the holding turn must not be detached

        def hold() -> None:
            with suppress(AggregateNotFoundError):
                app.repository.get(uuid.uuid4())  # a read: the hold takes a turn
            started.set()
            self.release.wait(timeout=60)

        self.holding = pool.submit(app.group_commit.run, hold)
        assert started.wait(timeout=30), "the writer never gave the hold its turn"

    def queue(self, command: Callable[[], Any]) -> Future:
        """Queue the command behind those queued before (its arrival is known).

        The command must read an aggregate: a command that reads nothing takes no turn
        (it joins the open batch at once); use :meth:`submit` for those.
        """
        waiting = self.app.group_commit.waiting()
        future = self.pool.submit(command)
        wait_for(lambda: self.app.group_commit.waiting() == waiting + 1, message="queued")
        return future

    def submit(self, command: Callable[[], Any]) -> Future:
        """Run a command that reads nothing: it joins the batch that is open."""
        return self.pool.submit(command)

    def let_go(self) -> None:
        self.release.set()
        self.holding.result(timeout=30)


def outcome(future: Future) -> Any:
    """The command's answer: its result, or its exception."""
    try:
        return future.result(timeout=60)
    except Exception as error:  # noqa: BLE001 - the answer under test
        return error


def commits_of(app: ServiceApplication) -> list[int]:
    """A list that counts the transactions committed on the app's store from now on."""
    commits: list[int] = []
    sqlalchemy.event.listen(app.recorder.datastore.engine, "commit", lambda _: commits.append(1))
    return commits
