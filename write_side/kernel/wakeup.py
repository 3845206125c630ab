"""Wake the relay as soon as its store has a new commit, rather than at its next poll.

PostgreSQL: the recorder sends ``NOTIFY <channel>`` in every transaction that inserts
events; the relay LISTENs on that channel on a connection of its own. SQLite: ``PRAGMA
data_version`` on a connection of its own changes when another connection commits; the
relay checks it every few milliseconds.

Nothing depends on these signals for correctness: the relay still polls every
``RELAY_POLL_INTERVAL``, so a missed or lost signal only delays an event until the next
poll. See docs/adr/0021-relay-wakes-on-commit.md.
"""

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from eventsourcing.persistence import ApplicationRecorder
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

CommitWatch = Callable[[asyncio.Event], Awaitable[None]]
"""Runs until cancelled; sets the event whenever the store may have a new commit."""


def commit_watch(
    recorder: ApplicationRecorder,
    *,
    name: str,
    listen_retry_interval: float,
    sqlite_check_interval: float,
) -> CommitWatch | None:
    """How to learn of the recorder's commits; None where there is no cheap way (an
    in-memory SQLite, another recorder, or a check interval of 0)."""
    if not isinstance(recorder, SQLAlchemyApplicationRecorder):
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
            retry_interval=listen_retry_interval,
            name=name,
        )
    if recorder.datastore.is_sqlite_filedb and sqlite_check_interval > 0:
        return SqliteDataVersionWatch(args, kwargs, interval=sqlite_check_interval, name=name)
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

    async def __call__(self, changed: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        stopping = threading.Event()
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name} data_version")
        try:
            await loop.run_in_executor(
                executor, self.check, lambda: loop.call_soon_threadsafe(changed.set), stopping
            )
        finally:
            stopping.set()  # the thread ends within one interval
            executor.shutdown(wait=False)

    def check(self, announce: Callable[[], object], stopping: threading.Event) -> None:
        """Call ``announce`` whenever data_version changed, until ``stopping`` is set."""
        connection = sqlite3.connect(*self.connect_args, **self.connect_kwargs)
        try:
            log.info("%s checks the store for commits every %g ms", self.name, self.interval * 1000)
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
