"""Wake the relay as soon as its store has a new commit, rather than at its next poll.

PostgreSQL: the recorder sends ``NOTIFY <channel>`` in every transaction that inserts
events; the relay LISTENs on that channel on a connection of its own. SQLite: ``PRAGMA
data_version`` on a connection of its own changes when another connection commits; the
relay checks it when the kernel reports a write to the database's files (inotify, on
Linux), or every few milliseconds where it cannot watch them.

Nothing depends on these signals for correctness: the relay still polls (every
``RELAY_WATCHED_POLL_INTERVAL`` while a watch is ``active``, ``RELAY_POLL_INTERVAL``
otherwise), so a missed or lost signal only delays an event until the next poll. See
docs/adr/0021-relay-wakes-on-commit.md and docs/adr/0022-an-idle-stack-sleeps.md.
"""

import asyncio
import contextlib
import logging
import os
import select
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import ApplicationRecorder
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy.engine import Engine

from kernel.settings import RelaySettings

log = logging.getLogger(__name__)

CommitWatch = Callable[[asyncio.Event], Awaitable[None]]
"""Runs until cancelled; sets the event whenever the store may have a new commit. A
watch may say whether it is announcing commits right now (``active``, see
``is_active``); the relay then polls only as a fallback, at a longer interval."""

SETTLE_CHECKS = (
    (0.0,) + (0.00025,) * 8 + (0.0005,) * 6 + (0.001,) * 5 + (0.0025,) * 4 + (0.01,) * 8
) + (0.025,) * 6
"""After the kernel reports a write to the database's files, the pauses (seconds) between
checks of ``PRAGMA data_version`` until it changes: every 0.25 ms for 2 ms, then more
sparsely until 250 ms. The write comes before its commit is visible: SQLite writes the
WAL frames, syncs the file, then updates the WAL index in shared memory, which reports
no event; here the commit showed 0 to 3 ms after the first write's event, and a slow
disk can take far longer to sync. A write that commits nothing new (a checkpoint, or the
end of a commit already seen) costs the 37 checks, about 1.5 ms of CPU."""


def is_active(watch: CommitWatch | None) -> bool:
    """True while ``watch`` announces the store's commits (see ``CommitWatch``)."""
    return bool(getattr(watch, "active", False))


def commit_watch(
    recorder: ApplicationRecorder, name: str, settings: RelaySettings
) -> CommitWatch | None:
    """How to learn of the recorder's commits; None where the settings turn it off
    (``RELAY_WAKE_ON_COMMIT``) or there is no cheap way (an in-memory SQLite, another
    recorder, or ``RELAY_SQLITE_CHECK_INTERVAL`` 0)."""
    if not settings.relay_wake_on_commit or not isinstance(recorder, SQLAlchemyApplicationRecorder):
        return None
    engine = recorder.datastore.engine
    if not isinstance(engine, Engine):
        return None
    connect_args, connect_kwargs = engine.dialect.create_connect_args(engine.url)
    args, kwargs = list(connect_args), dict(connect_kwargs)
    if engine.dialect.name == "postgresql":
        kwargs.pop("context", None)  # SQLAlchemy's type adapters: not needed to LISTEN
        schema = f" {recorder.schema_name}" if recorder.schema_name else ""
        return PostgresListener(
            kwargs,
            channel=recorder.channel_name,
            application_name=f"{name}{schema}",
            retry_interval=settings.relay_listen_retry_interval,
            name=name,
        )
    interval = settings.relay_sqlite_check_interval
    if recorder.datastore.is_sqlite_filedb and interval > 0:
        return SqliteFileWatch(args, kwargs, interval=interval, name=name)
    return None


class PostgresListener:
    """LISTEN on the recorder's channel; reconnect every ``retry_interval`` once lost.

    The channel is written as the recorder's NOTIFY writes it (unquoted), so that both
    name the same channel. ``application_name`` tells the connection apart in
    ``pg_stat_activity``.
    """

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        *,
        channel: str,
        application_name: str,
        retry_interval: float,
        name: str,
    ):
        self.connect_kwargs = {**connect_kwargs, "application_name": application_name}
        self.channel = channel
        self.retry_interval = retry_interval
        self.name = name
        self.listening = False

    @property
    def active(self) -> bool:
        return self.listening

    async def __call__(self, changed: asyncio.Event) -> None:
        first_attempt = True
        while True:
            self.listening = False
            try:
                await self.listen(changed)
                problem = "the server closed it"
            except psycopg.Error as error:
                problem = " ".join(str(error).split()) or type(error).__name__
            if self.listening or first_attempt:  # once per outage, not once per attempt
                log.warning(
                    "%s: no connection listening on channel %s (%s); polling only, "
                    "trying again every %g s",
                    self.name,
                    self.channel,
                    problem,
                    self.retry_interval,
                )
            first_attempt = False
            await asyncio.sleep(self.retry_interval)

    async def listen(self, changed: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(
            **self.connect_kwargs, autocommit=True
        ) as connection:
            await connection.execute(f"LISTEN {self.channel}")
            self.listening = True
            log.info("%s listens for commits on channel %s", self.name, self.channel)
            changed.set()  # a commit made while nobody listened was not announced
            async for _ in connection.notifies():
                changed.set()


class SqliteDataVersionWatch:
    """Check ``PRAGMA data_version`` every ``interval`` on a connection of its own.

    The value changes when another connection has committed to the file. The checks
    run in a thread of their own, which wakes for less than half the CPU an asyncio
    timer takes; the event loop runs only when the value changed. In WAL mode readers
    do not wait for writers; a busy database answers at once (timeout 0) and counts as
    a change.
    """

    def __init__(self, args: list[Any], kwargs: dict[str, Any], *, interval: float, name: str):
        self.connect_args = args
        self.connect_kwargs = {**kwargs, "timeout": 0, "isolation_level": None}
        self.interval = interval
        self.name = name
        self.active = False

    async def __call__(self, changed: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        stopping = threading.Event()
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name} data_version")
        try:
            await loop.run_in_executor(
                executor, self.check, lambda: loop.call_soon_threadsafe(changed.set), stopping
            )
        finally:
            self.active = False
            stopping.set()  # the thread ends within one interval
            executor.shutdown(wait=False)

    def check(self, announce: Callable[[], object], stopping: threading.Event) -> None:
        """Call ``announce`` whenever data_version changed, until ``stopping`` is set."""
        connection = sqlite3.connect(*self.connect_args, **self.connect_kwargs)
        try:
            log.info("%s checks the store for commits every %g ms", self.name, self.interval * 1000)
            self.active = True
            last = None
            while not stopping.is_set():
                time.sleep(self.interval)  # half the CPU of stopping.wait(interval)
                try:
                    version = connection.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.OperationalError:  # busy: a SELECT of the log will tell
                    version = None
                if version != last or version is None:
                    last = version
                    announce()
        finally:
            connection.close()


class SqliteFileWatch(SqliteDataVersionWatch):
    """Check ``PRAGMA data_version`` when the kernel reports a write to the database file
    or its write-ahead log (inotify), so an idle store costs nothing; where inotify is
    not there (not Linux, or no inotify instance left), every ``interval`` as before.

    The files themselves are watched, not their folder, so other stores' commits in the
    same folder do not wake this one. The watch's own connection keeps the ``-wal`` file
    (SQLite deletes it when the last connection closes).
    """

    def check(self, announce: Callable[[], object], stopping: threading.Event) -> None:
        try:
            import inotify_simple
        except ImportError:  # not installed (it is a Linux-only dependency)
            super().check(announce, stopping)
            return
        connection = sqlite3.connect(*self.connect_args, **self.connect_kwargs)
        try:
            last = self._data_version(connection)  # opens (or creates) the -wal file too
            try:
                inotify = inotify_simple.INotify(nonblocking=True)
            except (OSError, AttributeError) as error:  # no inotify here, or none left
                log.warning("%s cannot watch the store's files (%r)", self.name, error)
                connection.close()
                super().check(announce, stopping)
                return
            with inotify:
                if self._add_watches(inotify):
                    self._watch(inotify, connection, last, announce, stopping)
                    return
            log.warning("%s cannot watch the store's files (none found)", self.name)
            connection.close()
            super().check(announce, stopping)
        finally:
            connection.close()

    def _add_watches(self, inotify: Any) -> bool:
        """Watch the database file and its ``-wal`` file; False if neither is there (a
        ``file:`` URI, say)."""
        from inotify_simple import flags

        database = Path(self.connect_args[0])
        watched = False
        for path in (database, database.with_name(f"{database.name}-wal")):
            with contextlib.suppress(FileNotFoundError):  # no -wal: not in WAL mode
                inotify.add_watch(path, flags.MODIFY)
                watched = True
        return watched

    def _watch(
        self,
        inotify: Any,
        connection: sqlite3.Connection,
        last: int | None,
        announce: Callable[[], object],
        stopping: threading.Event,
    ) -> None:
        wake_read, wake_write = os.pipe()
        poller = select.poll()
        poller.register(inotify.fileno(), select.POLLIN)
        poller.register(wake_read, select.POLLIN)
        # `stopping` is set from the event loop's side; the pipe wakes this thread for it.
        stopper = threading.Thread(
            target=lambda: (stopping.wait(), os.write(wake_write, b"x")),
            name=f"{self.name} stop",
            daemon=True,
        )
        stopper.start()
        log.info("%s watches the store's files for commits (inotify)", self.name)
        self.active = True
        try:
            while not stopping.is_set():
                poller.poll()
                if stopping.is_set():
                    return
                for delay in SETTLE_CHECKS:
                    time.sleep(delay)
                    inotify.read(timeout=0)  # writes until now: this check covers them
                    version = self._data_version(connection)
                    if version != last or version is None:
                        last = version
                        announce()
                        break
        finally:
            self.active = False
            stopping.set()
            stopper.join()
            os.close(wake_read)
            os.close(wake_write)

    @staticmethod
    def _data_version(connection: sqlite3.Connection) -> int | None:
        try:
            version: int = connection.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError:  # busy: a SELECT of the log will tell
            return None
        return version
