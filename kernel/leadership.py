"""Which of a service's relays publishes: one leads, the others wait to take over.

Two (or more) relay processes of a service may run. Each asks to lead; the one that
does publishes, the others ask again every ``check_interval`` seconds.

- **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``), on a
  connection of the relay's own that it holds while it leads. The lock goes with the
  session: at once when the process dies (the server sees the socket close), and
  ``lease_seconds`` after the leader stopped talking (paused, cut off), as its session
  is given that ``idle_session_timeout``; the leader talks every third of it.
- **SQLite**: a lease row (holder, epoch, expiry), renewed by the leader every third of
  ``lease_seconds``; a standby takes it once it has expired. Nothing is held by the
  process, so a ``kill -9`` leaves nothing behind but a lease that runs out.

**Fencing.** Each new leader adds one to the lease row's ``epoch`` before it reads its
position. The relay's position is recorded in a transaction that also checks that the
epoch is still its own (``Leadership.record_position``), after the UPDATE of the
tracking row: on SQLite the single writer orders the two, on PostgreSQL the lease row is
read ``FOR SHARE``, so a new leader's epoch either commits before (the old leader's
write is refused: ``Fenced``) or after it (the new leader reads the position it wrote).
A leader that was paused, or cut off from its store, past its lease can therefore not
record a position once another relay leads, whatever its clock says. See
docs/adr/0030-standby-relay-leader-lock-and-fencing.md.
"""

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
import zlib
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from kernel.settings import RelaySettings
from kernel.store import SchemaProcessRecorder

log = logging.getLogger(__name__)

ADVISORY_LOCK_NAMESPACE = zlib.crc32(b"cqrs-template: relay leader") & 0x7FFFFFFF
"""The first key of the relays' advisory locks (the second names the relay)."""
STORE_ERRORS = (psycopg.Error, SQLAlchemyError, OSError)
"""What a call to the store raises when the store is away (TimeoutError is an OSError)."""
STEP_DOWN_TIMEOUT = 5.0
"""Seconds a relay waits for its store when it gives the leadership up."""


class LeadershipLost(Exception):
    """This relay no longer leads: it must stop publishing."""


class Fenced(LeadershipLost):
    """A position write refused: another relay has taken the leadership since."""


class Election:
    """How the relays of one log agree on a leader. The calls block: run them in a
    thread. ``name`` is the relay's tracking name (``relay:<topic>``)."""

    def __init__(self, recorder: SchemaProcessRecorder, name: str, lease_seconds: float):
        self.recorder = recorder
        self.name = name
        self.lease_seconds = lease_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.table = recorder.relay_leases_table

    @property
    def engine(self) -> Engine:
        engine = self.recorder.datastore.engine
        assert isinstance(engine, Engine)
        return engine

    lost_because = "it is no longer the leader"
    """Why ``confirm`` said no, for the log."""

    def try_to_lead(self) -> int | None:
        """Lead if nobody does: the new epoch, or None."""
        raise NotImplementedError

    def confirm(self, epoch: int) -> bool:
        """Still the leader of ``epoch``? (and for ``lease_seconds`` more)"""
        raise NotImplementedError

    def step_down(self, epoch: int) -> None:
        """Let a standby take over at once (if ``epoch`` is still this relay's)."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what asking took (a connection), leading or not."""

    def check_epoch(self, connection: Connection, epoch: int) -> None:
        """In a transaction that wrote already: raise ``Fenced`` unless ``epoch`` is the
        current one (on PostgreSQL the lease row stays locked until the transaction ends,
        so no new epoch commits in between)."""
        table = self.table
        statement = select(table.c.epoch).where(table.c.name == self.name)
        if connection.dialect.name == "postgresql":
            statement = statement.with_for_update(read=True)
        current = connection.execute(statement).scalar()
        if current != epoch:
            raise Fenced(f"epoch {epoch} is over, epoch {current} leads")


class SqliteLease(Election):
    """A lease row: a standby takes it once ``expires_at`` (wall clock: the relays share
    the machine of the database's file) is past; the leader moves it on."""

    lost_because = "another relay has taken its lease"

    def try_to_lead(self) -> int | None:
        table = self.table
        with self.engine.connect() as connection:  # a standby looks without taking the writer
            expires_at = connection.execute(
                select(table.c.expires_at).where(table.c.name == self.name)
            ).scalar()
        if expires_at is not None and expires_at > time.time():
            return None
        with self.engine.begin() as connection:
            connection.execute(
                sqlite_insert(table)
                .values(name=self.name, holder="", epoch=0, expires_at=0.0)
                .on_conflict_do_nothing()
            )
            now = time.time()  # the writer's lock is held: nobody else takes it meanwhile
            epoch: int | None = connection.execute(
                update(table)
                .where(table.c.name == self.name, table.c.expires_at <= now)
                .values(
                    holder=self.holder, epoch=table.c.epoch + 1, expires_at=now + self.lease_seconds
                )
                .returning(table.c.epoch)
            ).scalar()
        return epoch

    def confirm(self, epoch: int) -> bool:
        table = self.table
        with self.engine.begin() as connection:
            renewed = connection.execute(
                update(table)
                .where(table.c.name == self.name, table.c.epoch == epoch)
                .values(expires_at=time.time() + self.lease_seconds)
            )
        return renewed.rowcount == 1

    def step_down(self, epoch: int) -> None:
        table = self.table
        with self.engine.begin() as connection:
            connection.execute(
                update(table)
                .where(table.c.name == self.name, table.c.epoch == epoch)
                .values(expires_at=0.0)
            )


class PostgresAdvisoryLock(Election):
    """A session-level advisory lock on a connection of its own (no pool, no reconnect:
    the session that took the lock is the one that is asked whether it still holds it)."""

    lost_because = "the session holding its lock has ended"

    def __init__(
        self,
        recorder: SchemaProcessRecorder,
        name: str,
        lease_seconds: float,
        connect_kwargs: dict[str, Any],
    ):
        super().__init__(recorder, name, lease_seconds)
        schema = recorder.schema_name or ""
        relay = f"{schema}.{self.table.name}:{name}".encode()
        self.key = (ADVISORY_LOCK_NAMESPACE, zlib.crc32(relay) & 0x7FFFFFFF)
        self.connect_kwargs = {
            **connect_kwargs,
            "application_name": f"{name} leader {schema}".strip(),
            "autocommit": True,
            # A dead peer is noticed within seconds, not when TCP gives up (minutes).
            "keepalives": 1,
            "keepalives_idle": 1,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": int(lease_seconds * 1000),
        }
        self.table_name = sql.Identifier(*filter(None, (recorder.schema_name, self.table.name)))
        self._connection: psycopg.Connection[Any] | None = None
        self._using = threading.Lock()  # one call at a time on the connection

    def try_to_lead(self) -> int | None:
        with self._using:
            try:
                if self._connection is None:
                    self._connection = psycopg.connect(**self.connect_kwargs)
                connection = self._connection
                locked = connection.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key)
                if not locked.fetchone()[0]:  # type: ignore[index]
                    return None
                # From now on the session must talk every lease, or the server ends it.
                timeout = f"{int(self.lease_seconds * 1000)}ms"
                connection.execute(
                    "SELECT set_config('idle_session_timeout', %s, false)", [timeout]
                )
                bumped = connection.execute(
                    sql.SQL(
                        "INSERT INTO {} AS lease (name, holder, epoch, expires_at) "
                        "VALUES (%s, %s, 1, 0) ON CONFLICT (name) DO UPDATE "
                        "SET epoch = lease.epoch + 1, holder = excluded.holder RETURNING epoch"
                    ).format(self.table_name),
                    [self.name, self.holder],
                )
                return int(bumped.fetchone()[0])  # type: ignore[index]
            except psycopg.Error:
                self._close()  # and with the session, the lock if it was taken
                raise

    def confirm(self, epoch: int) -> bool:
        with self._using:
            if self._connection is None:
                return False
            try:
                held = self._connection.execute(
                    "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND granted AND objsubid = 2 "
                    "AND classid = %s::bigint::oid AND objid = %s::bigint::oid)",
                    self.key,
                ).fetchone()[0]  # type: ignore[index]
            except psycopg.Error:
                held = False
            if not held:
                self._close()
            return bool(held)

    def step_down(self, epoch: int) -> None:
        with self._using:
            self._close()  # the session ends, and its lock with it

    def close(self) -> None:
        self.step_down(0)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                connection.close()


def election_for(recorder: object, name: str, lease_seconds: float) -> Election | None:
    """The election among ``recorder``'s relays; None where relays cannot share the
    store (an in-memory SQLite, another recorder)."""
    if not isinstance(recorder, SchemaProcessRecorder):
        return None
    engine = recorder.datastore.engine
    if not isinstance(engine, Engine):
        return None
    if engine.dialect.name == "postgresql":
        _, kwargs = engine.dialect.create_connect_args(engine.url)
        kwargs = dict(kwargs)
        kwargs.pop("context", None)  # SQLAlchemy's type adapters: not needed here
        return PostgresAdvisoryLock(recorder, name, lease_seconds, kwargs)
    if recorder.datastore.is_sqlite_filedb:
        return SqliteLease(recorder, name, lease_seconds)
    return None


class Leadership:
    """One relay's part in its log's election: wait to lead, confirm it while leading,
    record positions only while it holds, step down."""

    def __init__(self, election: Election, *, check_interval: float):
        self.election = election
        self.name = election.name
        self.lease_seconds = election.lease_seconds
        self.check_interval = check_interval
        self.epoch: int | None = None
        self._confirmed_at = 0.0

    def current(self) -> bool:
        """Leading as far as this process knows without asking: confirmed within the
        lease (False at once after a pause longer than the lease)."""
        return self.epoch is not None and time.monotonic() < self._confirmed_at + self.lease_seconds

    async def wait_to_lead(self, stopping: asyncio.Event, *, lost_it: bool = False) -> bool:
        """Ask every ``check_interval`` until this relay leads (True) or ``stopping``
        is set (False). A relay that has just ``lost_it`` (paused, cut off) first waits a
        lease, so that a standby that kept asking takes over rather than it."""
        said_it_waits = failing = False
        if lost_it and not stopping.is_set():
            log.info(
                "relay %s waits: another relay leads, or may (it asks again in %g s)",
                self.name,
                self.lease_seconds,
            )
            said_it_waits = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease_seconds):
                    await stopping.wait()
        while not stopping.is_set():
            asked_at = time.monotonic()
            try:
                epoch = await asyncio.to_thread(self.election.try_to_lead)
            except STORE_ERRORS as error:  # the store is away: keep asking
                if not failing:
                    log.warning(
                        "relay %s cannot ask its store for the leadership (%s); trying every %g s",
                        self.name,
                        " ".join(str(error).split()) or type(error).__name__,
                        self.check_interval,
                    )
                failing, epoch = True, None
            else:
                failing = False
            if epoch is not None:
                self.epoch, self._confirmed_at = epoch, asked_at
                log.info("relay %s becomes the leader (epoch %d)", self.name, epoch)
                return True
            if not said_it_waits and not failing:
                log.info("relay %s waits: another relay leads", self.name)
                said_it_waits = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.check_interval):
                    await stopping.wait()
        return False

    async def keep(self) -> None:
        """Confirm the leadership every third of the lease; return (with a warning) once
        it is lost, or could not be confirmed within the lease."""
        epoch = self.epoch
        assert epoch is not None, "keep() is for a leader"
        while True:
            due = self._confirmed_at + self.lease_seconds / 3
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            asked_at = time.monotonic()
            remaining = self._confirmed_at + self.lease_seconds - asked_at
            if remaining <= 0:
                reason = "its lease ran out before it could confirm it (was it paused?)"
                break
            try:
                async with asyncio.timeout(remaining):
                    confirmed = await asyncio.to_thread(self.election.confirm, epoch)
            except TimeoutError:
                reason = f"its store did not answer within the lease ({self.lease_seconds:g} s)"
                break
            except STORE_ERRORS as error:
                reason = f"confirming it failed ({' '.join(str(error).split())})"
                break
            if not confirmed:
                reason = self.election.lost_because
                break
            self._confirmed_at = asked_at
        log.warning(
            "relay %s lost its leadership (epoch %d): %s; it stops publishing",
            self.name,
            epoch,
            reason,
        )

    def record_position(self, name: str, position: int) -> None:
        """Record the relay's position, fenced: refused (``Fenced``) unless this relay's
        epoch is still the current one, in the same transaction."""
        epoch = self.epoch
        if epoch is None:
            raise Fenced(f"position {position} not recorded: this relay does not lead")

        def fence(connection: Connection) -> None:
            try:
                self.election.check_epoch(connection, epoch)
            except Fenced as fenced:
                raise Fenced(f"position {position} not recorded: {fenced}") from None

        self.election.recorder.record_position(name, position, fence=fence)

    async def step_down(self) -> None:
        """Give the leadership up, so a standby takes over at once (not waiting for the
        lease); at most ``STEP_DOWN_TIMEOUT`` seconds, then the lease does it."""
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        try:
            async with asyncio.timeout(STEP_DOWN_TIMEOUT):
                await asyncio.to_thread(self.election.step_down, epoch)
        except STORE_ERRORS as error:
            log.warning("relay %s could not step down at once (%r)", self.name, error)
        else:
            log.info("relay %s steps down (epoch %d)", self.name, epoch)

    async def close(self) -> None:
        """Step down if leading, and let go of the election's connection (a standby's)."""
        await self.step_down()
        with contextlib.suppress(*STORE_ERRORS):
            async with asyncio.timeout(STEP_DOWN_TIMEOUT):
                await asyncio.to_thread(self.election.close)


def leadership_for(recorder: object, name: str, settings: RelaySettings) -> Leadership | None:
    """The relay's ``Leadership``; None where the settings turn the election off
    (``RELAY_LEADER_ELECTION``) or relays cannot share the store."""
    if not settings.relay_leader_election:
        return None
    election = election_for(recorder, name, settings.relay_lease_seconds)
    if election is None:
        return None
    return Leadership(election, check_interval=settings.relay_standby_check_interval)
