"""Event store configuration: eventsourcing + SQLAlchemy on SQLite or PostgreSQL."""

import json
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    IntegrityError,
    Mapper,
    Notification,
    ProgrammingError,
    StoredEvent,
    Tracking,
    Transcoder,
)
from eventsourcing.utils import Environment
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import (
    SQLAlchemyAggregateRecorder,
    SQLAlchemyProcessRecorder,
)
from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex, CreateTable

from kernel.metadata import MessageMetadata, current_metadata
from kernel.tracing import current_trace_context

_METADATA_KEY = "__metadata__"
_CREATE_TABLES = zlib.crc32(b"cqrs-template: create event store tables")
"""The PostgreSQL advisory lock held while a process creates its store's tables."""
_DEFINING_RECORD_CLASSES = threading.Lock()
"""eventsourcing-sqlalchemy caches record classes per table in a class-level dict,
checked and then filled: applications opened by two threads at once could both define
the same table, and the second fails ("already defined for this MetaData")."""


def event_store_env(database_url: str, schema: str | None = None) -> dict[str, str]:
    """The eventsourcing environment for one service's store.

    ``sqlite:///path`` (the default) or ``postgresql+psycopg://...``; a bare
    ``postgresql://`` URL is given the psycopg (v3) driver.
    """
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported event store URL (use sqlite or postgresql): {url!r}")
    env = {
        "PERSISTENCE_MODULE": "kernel.store:Factory",
        "SQLALCHEMY_URL": url.render_as_string(hide_password=False),
        "MAPPER_TOPIC": "kernel.store:MetadataMapper",
    }
    if schema:
        env["SQLALCHEMY_SCHEMA"] = schema
    return env


class _MetadataTranscoder(Transcoder):
    """Adds the current command's metadata to each encoded state; strips it on decode.

    The metadata a decode stripped is kept for its thread (``stripped``), so the relay
    gets an event and its metadata from one decode (``MetadataMapper.decode``)."""

    def __init__(self, inner: Transcoder):
        self.inner = inner
        self.stripped = threading.local()

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, dict):
            metadata = current_metadata() or MessageMetadata.new()
            # The trace context of the span saving it (none when tracing is off).
            obj = {**obj, _METADATA_KEY: {**metadata.stored(), **current_trace_context()}}
        return self.inner.encode(obj)

    def decode(self, data: bytes) -> Any:
        obj = self.inner.decode(data)
        self.stripped.metadata = obj.pop(_METADATA_KEY, None) if isinstance(obj, dict) else None
        return obj


class MetadataMapper(Mapper[Any]):
    """Stores correlation/causation ids beside each event's state, out of the domain's sight."""

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ):
        self._metadata_transcoder = _MetadataTranscoder(transcoder)
        super().__init__(self._metadata_transcoder, compressor, cipher)
        self._plain_transcoder = transcoder

    def decode(
        self, stored_event: StoredEvent
    ) -> tuple[DomainEventProtocol[Any], MessageMetadata | None]:
        """The domain event and its metadata, from one decoding of the stored state
        (``to_domain_event`` and then ``metadata_of`` decode it twice)."""
        domain_event = self.to_domain_event(stored_event)
        raw = self._metadata_transcoder.stripped.metadata
        return domain_event, MessageMetadata.from_stored(raw) if raw else None

    def metadata_of(self, stored_event: StoredEvent) -> MessageMetadata | None:
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        raw = self._plain_transcoder.decode(state).get(_METADATA_KEY)
        return MessageMetadata.from_stored(raw) if raw else None


class CoreReads:
    """``select_events`` with SQLAlchemy Core statements, built once per shape.

    eventsourcing-sqlalchemy reads through the ORM: a Session and a mapped object per
    row, about half a millisecond for a one-row read on SQLite here, most of a saga
    reaction's time (an aggregate's load, an "is it there?" check). Core returns plain
    rows from a pooled connection.
    """

    datastore: SQLAlchemyDatastore
    events_record_cls: Any
    _select_statements: dict[tuple[bool, bool, bool, bool], Select[Any]]

    def select_events(
        self,
        originator_id: Any,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        shape = (gt is not None, lte is not None, desc, limit is not None)
        statements = self.__dict__.setdefault("_select_statements", {})
        statement = statements.get(shape)
        if statement is None:
            statement = statements[shape] = self._select_events_statement(*shape)
        with self._reader().connect() as connection:
            rows = connection.execute(
                statement, {"originator_id": originator_id, "gt": gt, "lte": lte, "limit": limit}
            ).all()
        return [
            StoredEvent(
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=bytes(state) if isinstance(state, memoryview) else state,
            )
            for version, topic, state in rows
        ]

    def _reader(self) -> Engine:
        """The engine reads go through. On PostgreSQL in autocommit: a read is one
        statement, without a BEGIN and a ROLLBACK around it (two round trips). SQLite's
        driver begins no transaction for a SELECT anyway (and would pay a PRAGMA for
        the setting at each checkout)."""
        reader = self.__dict__.get("_reading_engine")
        if reader is None:
            self.datastore.init_sqlite_wal_mode()  # as the library's first transaction does
            engine = self.datastore.engine
            assert isinstance(engine, Engine)
            if engine.dialect.name == "postgresql":
                engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            reader = self.__dict__["_reading_engine"] = engine
        return reader

    def _select_events_statement(self, gt: bool, lte: bool, desc: bool, limit: bool) -> Select[Any]:
        table = self.events_record_cls.__table__
        version = table.c.originator_version
        statement = select(version, table.c.topic, table.c.state).where(
            table.c.originator_id == bindparam("originator_id")
        )
        if gt:
            statement = statement.where(version > bindparam("gt"))
        if lte:
            statement = statement.where(version <= bindparam("lte"))
        statement = statement.order_by(version.desc() if desc else version)
        if limit:
            statement = statement.limit(bindparam("limit"))
        return statement


class RaceSafeTables:
    """Creates a recorder's tables if they do not exist, safely when processes race to
    do it.

    A service's processes (API, relays, saga worker) start together, and the library's
    "create if not exists" is a check, then a create: on a fresh store two of them may
    both create a table, and one fails (seen in the chaos rounds: a relay exiting at
    start on ``table accounting_snapshots already exists``). SQLite checks for itself
    with ``CREATE ... IF NOT EXISTS``. On PostgreSQL that can still collide in the
    catalog, so a session advisory lock around the creation makes the others wait, then
    find the tables there.
    """

    datastore: SQLAlchemyDatastore
    tables: list[Table]

    def all_tables(self) -> list[Table]:
        return list(self.tables)

    def create_table(self) -> None:
        engine = self.datastore.engine
        if not isinstance(engine, Engine):
            super().create_table()  # type: ignore[misc]
            return
        if engine.dialect.name == "sqlite":
            # WAL mode (a property of the file) before anything else, so that every
            # process finds the store in it from the start: readers and the writer do not
            # block each other, and the relay's commit watch finds the -wal file it
            # watches (the library would switch at its first transaction, some time later).
            _switch_to_wal(self.datastore)
            with engine.begin() as connection:
                for table in self.all_tables():
                    connection.execute(CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        connection.execute(CreateIndex(index, if_not_exists=True))
                _add_new_columns(connection, self.all_tables())
            return
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _CREATE_TABLES})
            try:
                super().create_table()  # type: ignore[misc]
                _add_new_columns(connection, self.all_tables())
                connection.commit()  # the advisory lock is the session's: it stays
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _CREATE_TABLES})


def _add_new_columns(connection: Connection, tables: Iterable[Table]) -> None:
    """Add the columns a table has gained since the store was made (nullable ones only),
    so that a project updated from the template opens its existing store.

    On SQLite, another process may add the same column first ("duplicate column name"):
    then it is there, as wanted. On PostgreSQL the caller holds the advisory lock.
    """
    inspector = inspect(connection)
    quote = connection.dialect.identifier_preparer
    for table in tables:
        present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise ProgrammingError(f"{table.name}.{column.name} is new and not nullable")
            statement = (
                f"ALTER TABLE {quote.format_table(table)} ADD COLUMN "
                f"{quote.format_column(column)} {column.type.compile(connection.dialect)}"
            )
            try:
                connection.execute(text(statement))
            except OperationalError as error:
                if "duplicate column" not in str(error.orig):
                    raise


WAL_SWITCH_TIMEOUT = 30.0
"""How long a process keeps trying to put a fresh SQLite store in WAL mode."""


def _switch_to_wal(datastore: SQLAlchemyDatastore) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while another process holds the file's lock.

    Processes opening a fresh file together each take its shared lock and then want the
    exclusive one: SQLite refuses one of them at once ("database is locked") rather than
    make it wait for a lock the other would never give up. Once one has switched, the
    others find the file in WAL mode."""
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT
    while True:
        try:
            datastore.init_sqlite_wal_mode()
            return
        except OperationalError as error:
            busy = getattr(error.orig, "sqlite_errorname", None) == "SQLITE_BUSY"
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(random.uniform(0.005, 0.05))  # apart, so the next try is not a tie too


class SnapshotRecorder(RaceSafeTables, CoreReads, SQLAlchemyAggregateRecorder):
    """The library's aggregate recorder (snapshots), reading with Core."""


class InboxConflict(IntegrityError):
    """A message of the batch was recorded as handled already (by another worker)."""

    def __init__(self, names: Sequence[str]):
        super().__init__(f"already recorded in the inbox: {', '.join(names)}")
        self.names = frozenset(names)


class IdempotencyConflict(IntegrityError):
    """Idempotency keys a batch would record that the store holds already."""

    def __init__(self, keys: Sequence[str]):
        super().__init__("idempotency key already recorded")
        self.keys = frozenset(keys)


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's Idempotency-Key, recorded with the events of the command it caused."""

    key: str  # scoped by the caller (see kernel.idempotency)
    fingerprint: str  # the request's method, path and body, hashed
    expires_at: float  # epoch seconds
    saved: tuple[tuple[str, int], ...] = ()
    """What the command saved, each aggregate's id and new version (set by the group
    commit): told to a copy if the answer is lost."""


@dataclass(frozen=True)
class IdempotencyRecord:
    fingerprint: str
    expires_at: float
    status: int | None  # None until the first request's answer is recorded
    content_type: str | None
    body: bytes | None
    claimed_at: float | None = None  # when the command's transaction recorded the key
    saved: tuple[tuple[str, int], ...] = ()


class SchemaProcessRecorder(RaceSafeTables, CoreReads, SQLAlchemyProcessRecorder):
    """The library's process recorder, with its events table in the configured schema,
    inserting many events with one statement.

    eventsourcing-sqlalchemy 1.0.1 does not pass ``schema_name`` on to the events
    table of a process recorder (only the tracking table gets it), so with
    ``<SERVICE>_DATABASE_SCHEMA`` set the events would land in the default schema.
    It also inserts through the ORM, one object per event (about 300 µs an event on
    PostgreSQL); a group commit's batch goes in as one INSERT ... RETURNING. Reads of
    events and of the inbox use Core (``CoreReads``).
    """

    def __init__(
        self,
        datastore: SQLAlchemyDatastore,
        *,
        events_table_name: str,
        tracking_table_name: str,
        schema_name: str | None = None,
    ):
        with _DEFINING_RECORD_CLASSES:
            super().__init__(
                datastore,
                events_table_name=events_table_name,
                tracking_table_name=tracking_table_name,
                schema_name=schema_name,
            )
            if schema_name and self.events_record_cls.__table__.schema != schema_name:
                self.schema_name = schema_name  # also names the table in LOCK TABLE
                self.tables.remove(self.events_record_cls.__table__)
                self.events_record_cls = self.datastore.define_record_class(
                    cls_name=f"{schema_name.title().replace('_', '')}ProcessEventRecord",
                    table_name=events_table_name,
                    schema_name=schema_name,
                    base_cls=self.datastore.base_stored_event_record_cls,
                )
                self.tables.append(self.events_record_cls.__table__)
        self._unnest_insert: str | None = None
        self._max_tracking_id: Select[Any] | None = None
        self._inbox_statements: tuple[Any, Any, Any] | None = None
        self._notification_statements: dict[tuple[bool, bool, bool, bool], Select[Any]] = {}
        prefix = events_table_name.removesuffix("events")
        self.idempotency_table = Table(
            f"{prefix}idempotency_keys",
            MetaData(schema=schema_name),
            Column("key", String(400), primary_key=True),
            Column("fingerprint", String(64), nullable=False),
            Column("expires_at", Float, nullable=False, index=True),
            Column("status", Integer, nullable=True),
            Column("content_type", String(100), nullable=True),
            Column("body", LargeBinary, nullable=True),
            Column("claimed_at", Float, nullable=True),  # added later: NULL in older rows
            Column("saved", Text, nullable=True),  # JSON [[aggregate id, version], ...]
        )
        self.tables.append(self.idempotency_table)
        self.relay_leases_table = Table(
            f"{prefix}relay_leases",
            MetaData(schema=schema_name),
            Column("name", String(200), primary_key=True),
            Column("holder", String(200), nullable=False),
            Column("epoch", Integer, nullable=False),
            Column("expires_at", Float, nullable=False),
        )
        """Who leads each relay of this log, and since which epoch (kernel.leadership)."""
        self.tables.append(self.relay_leases_table)
        self._next_purge = 0.0

    def all_tables(self) -> list[Table]:
        return [*self.tables, self.tracking_table]

    def max_tracking_id(self, application_name: str) -> int | None:
        """The inbox's position for a name, with Core."""
        if self._max_tracking_id is None:
            table = self.tracking_table
            self._max_tracking_id = select(func.max(table.c.notification_id)).where(
                table.c.application_name == bindparam("name")
            )
        with self._reader().connect() as connection:
            found = connection.execute(self._max_tracking_id, {"name": application_name}).scalar()
        return None if found is None else int(found)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        """The log from ``start`` on, with Core (the relay's read)."""
        shape = (start is not None, inclusive_of_start, stop is not None, bool(topics))
        statement = self._notification_statements.get(shape)
        if statement is None:
            statement = self._notification_statements[shape] = self._notifications(*shape)
        parameters = {"start": start, "stop": stop, "topics": list(topics), "limit": limit}
        with self._reader().connect() as connection:
            rows = connection.execute(statement, parameters).all()
        return [
            Notification(
                id=notification_id,
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=bytes(state) if isinstance(state, memoryview) else state,
            )
            for notification_id, originator_id, version, topic, state in rows
        ]

    def _notifications(
        self, start: bool, inclusive_of_start: bool, stop: bool, topics: bool
    ) -> Select[Any]:
        table = self.events_record_cls.__table__
        statement = select(
            table.c.id,
            table.c.originator_id,
            table.c.originator_version,
            table.c.topic,
            table.c.state,
        )
        if start:
            first: Any = bindparam("start")
            statement = statement.where(
                table.c.id >= first if inclusive_of_start else table.c.id > first
            )
        if stop:
            statement = statement.where(table.c.id <= bindparam("stop"))
        if topics:
            statement = statement.where(table.c.topic.in_(bindparam("topics", expanding=True)))
        return statement.order_by(table.c.id).limit(bindparam("limit"))

    def insert_tracking(self, tracking: Tracking) -> None:
        """The library's, with Core (see :meth:`record_position`)."""
        self.record_position(tracking.application_name, tracking.notification_id)

    def record_position(
        self, name: str, position: int, *, fence: Callable[[Connection], None] | None = None
    ) -> None:
        """Record ``position`` as ``name``'s tracking id (the relay's position), one
        UPDATE in the common case: the library's check too, an ``IntegrityError`` if that
        position or a later one is recorded already (another relay of the same log?).

        ``fence`` is called in the same transaction after the UPDATE (which holds the
        tracking row, and on SQLite the single writer's lock), and raises to roll it back:
        a relay that no longer leads cannot record (``kernel.leadership``)."""
        with self.transaction(commit=True) as session:
            self._advance_inbox(session, {name: (position, position)})
            if fence is not None:
                fence(session.connection())

    def _insert_events(
        self, session: Session, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """Also ``inbox={name: (first, last)}``: a batch of consumed messages' positions;
        ``idempotency=[IdempotencyClaim, ...]``: the keys of the requests that caused them."""
        inbox: Mapping[str, tuple[int, int]] | None = kwargs.get("inbox")
        claims: Sequence[IdempotencyClaim] | None = kwargs.get("idempotency")
        if inbox or claims:
            self._lock_table(session)  # one writer at a time, as for the events
        if inbox:
            self._advance_inbox(session, inbox)
        if claims:
            self._claim_keys(session, claims)
        super()._insert_events(session, stored_events, **kwargs)

    def _claim_keys(self, session: Session, claims: Sequence[IdempotencyClaim]) -> None:
        """Record the keys, unless the store holds one already (``IdempotencyConflict``).

        One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` in the common case; a key it
        did not insert is held, or has expired and is taken over. Under the events
        table's lock (PostgreSQL) or SQLite's one writer: no other transaction records a
        key meanwhile. Expired keys are deleted here, at most once a minute.
        """
        table, connection, now = self.idempotency_table, session.connection(), time.time()
        if now >= self._next_purge:
            connection.execute(delete(table).where(table.c.expires_at < now))
            self._next_purge = now + 60
        insert_new = (
            postgresql_insert(table)
            if connection.dialect.name == "postgresql"
            else sqlite_insert(table)
        )
        rows = [
            {
                "key": c.key,
                "fingerprint": c.fingerprint,
                "expires_at": c.expires_at,
                "claimed_at": now,
                "saved": json.dumps(c.saved),
            }
            for c in claims
        ]
        inserted = set(
            connection.execute(
                insert_new.on_conflict_do_nothing().returning(table.c.key), rows
            ).scalars()
        )
        held = []
        for claim in claims:
            if claim.key in inserted:
                continue
            taken_over = connection.execute(
                update(table)
                .where(table.c.key == claim.key, table.c.expires_at < now)
                .values(
                    fingerprint=claim.fingerprint,
                    expires_at=claim.expires_at,
                    status=None,
                    content_type=None,
                    body=None,
                    claimed_at=now,
                    saved=json.dumps(claim.saved),
                )
            )
            if not taken_over.rowcount:
                held.append(claim.key)
        if held:
            raise IdempotencyConflict(held)

    def find_idempotency_key(self, key: str) -> IdempotencyRecord | None:
        """The key's record, unless it has expired."""
        table = self.idempotency_table
        statement = select(
            table.c.fingerprint,
            table.c.expires_at,
            table.c.status,
            table.c.content_type,
            table.c.body,
            table.c.claimed_at,
            table.c.saved,
        ).where(table.c.key == key, table.c.expires_at >= time.time())
        with self._reader().connect() as connection:
            row = connection.execute(statement).first()
        if row is None:
            return None
        body = bytes(row.body) if row.body is not None else None
        saved = tuple((str(i), int(v)) for i, v in json.loads(row.saved or "[]"))
        return IdempotencyRecord(
            row.fingerprint,
            row.expires_at,
            row.status,
            row.content_type,
            body,
            row.claimed_at,
            saved,
        )

    def record_answers(self, answers: Sequence[tuple[str, int, str, bytes]]) -> None:
        """Keep the answers (key, status, content type, body) of the requests that
        recorded those keys, to answer their repeats; one transaction."""
        table = self.idempotency_table
        with self.transaction(commit=True) as session:
            session.connection().execute(
                update(table)
                .where(table.c.key == bindparam("k"))
                .values(status=bindparam("s"), content_type=bindparam("c"), body=bindparam("b")),
                [{"k": k, "s": s, "c": c, "b": b} for k, s, c, b in answers],
            )

    def _advance_inbox(self, session: Session, inbox: Mapping[str, tuple[int, int]]) -> None:
        """Move each name's position to ``last``, if it is still before ``first``.

        The tracking table keeps one row per name (eventsourcing updates it in place),
        the next position to handle: a batch that finds it at ``first`` or beyond holds a
        message handled before, and must not be stored (``InboxConflict``).
        """
        if self._inbox_statements is None:
            table = self.tracking_table
            name, position = table.c.application_name, table.c.notification_id
            self._inbox_statements = (
                update(table)
                .where(name == bindparam("n"), position < bindparam("first"))
                .values(notification_id=bindparam("last")),
                select(position).where(name == bindparam("n")),
                insert(table).values(
                    application_name=bindparam("n"), notification_id=bindparam("last")
                ),
            )
        move, find, add = self._inbox_statements
        connection = session.connection()
        conflicts = []
        for partition, (first, last) in inbox.items():
            moved = connection.execute(move, {"n": partition, "first": first, "last": last})
            if moved.rowcount:
                continue
            if connection.execute(find, {"n": partition}).first() is not None:
                conflicts.append(partition)
            else:
                connection.execute(add, {"n": partition, "last": last})
        if conflicts:
            raise InboxConflict(conflicts)

    def _insert_stored_events(
        self, session: Session, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int]:
        if not stored_events:
            return []
        self._lock_table(session)  # ids are given in commit order: no gaps for the relay
        if session.get_bind().dialect.name == "postgresql":
            inserted = self._insert_postgresql(session, stored_events)
        else:
            inserted = self._insert_many_values(session, stored_events)
        # Each id is matched to its event by (aggregate, version), which is unique: this
        # needs no promise about the order of RETURNING rows.
        ids = {
            (originator_id, version): notification_id
            for notification_id, originator_id, version in inserted
        }
        self._notify_channel(session)
        return [ids[event.originator_id, event.originator_version] for event in stored_events]

    def _insert_postgresql(
        self, session: Session, stored_events: Sequence[StoredEvent]
    ) -> Iterable[Any]:
        """One INSERT ... SELECT FROM unnest(arrays): four parameters, however many events.

        A multi-row VALUES statement has four parameters per event, and psycopg parses
        such a long statement again on every call (it caches only short ones); arrays in
        psycopg's binary format need no escaping. Over two thirds of the insert's time
        went there. The statement goes to psycopg as written (``%b``: binary format).
        """
        if self._unnest_insert is None:
            table = session.get_bind().dialect.identifier_preparer.format_table(
                self.events_record_cls.__table__
            )
            self._unnest_insert = (
                f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
                "SELECT originator_id, originator_version, topic, state "
                "FROM unnest(%b::uuid[], %b::integer[], %b::text[], %b::bytea[]) "
                "WITH ORDINALITY AS e(originator_id, originator_version, topic, state, n) "
                "ORDER BY n RETURNING id, originator_id, originator_version"
            )
        return session.connection().exec_driver_sql(
            self._unnest_insert,
            (
                [event.originator_id for event in stored_events],
                [event.originator_version for event in stored_events],
                [event.topic for event in stored_events],
                [event.state for event in stored_events],
            ),
        )

    def _insert_many_values(
        self, session: Session, stored_events: Sequence[StoredEvent]
    ) -> Iterable[Any]:
        """One multi-row INSERT ... VALUES ... RETURNING (SQLite)."""
        table = self.events_record_cls.__table__
        statement = insert(table).returning(
            table.c.id, table.c.originator_id, table.c.originator_version
        )
        rows = [
            {
                "originator_id": event.originator_id,
                "originator_version": event.originator_version,
                "topic": event.topic,
                "state": event.state,
            }
            for event in stored_events
        ]
        return session.execute(statement, rows)


DEFAULT_STORE_TIMEOUT = 5.0


class Datastore(SQLAlchemyDatastore):
    """eventsourcing-sqlalchemy's datastore, made for a store that may be away a while.

    ``timeout`` bounds how long a connection waits for the store: PostgreSQL's connect
    timeout (libpq waits for ever by default), SQLite's wait for another writer's lock.
    Past it the command fails with the driver's ``OperationalError``: a ``503``
    (``kernel/unavailable.py``), retried by the workers. On PostgreSQL each connection is
    pinged as it leaves the pool (``pool_pre_ping``): after a restart of the server the
    pool's connections are dead, and the first command on each would fail without it.
    The ping is a round trip per checkout (about 0.1 ms on localhost).
    """

    def __init__(
        self, *, url: str | None = None, timeout: float = DEFAULT_STORE_TIMEOUT, **kwargs: Any
    ) -> None:
        if url and "creator" not in kwargs:
            backend = make_url(url).get_backend_name()
            if backend == "postgresql":
                kwargs.setdefault("pool_pre_ping", True)
                kwargs.setdefault("connect_args", {"connect_timeout": max(1, round(timeout))})
            elif backend == "sqlite":
                kwargs.setdefault("connect_args", {"timeout": timeout})
        super().__init__(url=url, **kwargs)


class Factory(SQLAlchemyFactory):
    """eventsourcing-sqlalchemy's factory, with :class:`SchemaProcessRecorder`,
    :class:`SnapshotRecorder` and :class:`Datastore`, whose ``timeout`` is the
    environment's ``EVENT_STORE_TIMEOUT`` (seconds, default 5)."""

    EVENT_STORE_TIMEOUT = "EVENT_STORE_TIMEOUT"

    process_recorder_class = SchemaProcessRecorder
    aggregate_recorder_class = SnapshotRecorder

    def __init__(self, env: Environment):
        timeout = float(env.get(self.EVENT_STORE_TIMEOUT) or DEFAULT_STORE_TIMEOUT)
        self.datastore_class = partial(Datastore, timeout=timeout)  # type: ignore[assignment]
        super().__init__(env)
