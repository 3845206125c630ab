"""Group commit: the concurrent commands of a service share one transaction.

A command method marked with :func:`command` does not save on its own. Its call joins
a queue, and the queued commands take *turns* in arrival order (a writer thread starts
the first; each command starts the next when its turn ends). A command runs, in its
caller's thread and context (taking its turn at its first read: a command that reads
nothing joins the open batch at once), against the service's identity map
(each aggregate is loaded once; a command sees the changes of the commands before it
and gets its own copy, so one that fails leaves nothing behind). Its ``save`` stages
its events and ends its turn. The commands that had their turns form a batch; a
committer thread inserts all of a batch's events with one recorder call, one
transaction, and only then does any command of the batch get its answer: its
recordings (version, position), or the error it raised. While a batch is being
committed the next one is already running and grows until the committer is free (or
``max_batch_size``): no command waits for anything but the transaction before it.

- A domain error or a missing aggregate fails only its own command; it changed
  nothing the others see.
- A conflict with another writer (the store already holds a version a command
  staged) fails that command with the ``IntegrityError`` it would get alone. A
  command that read what a failed command staged decided on a state that will not be
  stored: it is run again in a later batch. The rest of the batch is inserted again.
- Any other error of the insert (database down, crash) rolls the transaction back:
  nothing of the batch is stored, every command that saved gets the error, and those
  that read what they staged run again. A command that saved nothing and read only
  stored state keeps its own answer (a 404 stays a 404).
- A command whose turn lasts longer than ``max_turn`` seconds is detached: the others
  go on without it, and it finishes on its own, saving in its own transaction as if
  there were no batching (after its batch is settled, so it never builds on
  unstored state).

Why, and what it costs: docs/adr/0015-group-commit-on-the-write-side.md.
"""

import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from copy import deepcopy
from dataclasses import dataclass
from enum import Enum
from functools import wraps
from queue import Empty, SimpleQueue
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent, Repository
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Mapper,
    Notification,
    PersistenceError,
    Recording,
    StoredEvent,
)

P = ParamSpec("P")
R = TypeVar("R")

MAX_BATCH_SIZE = 500
MAX_TURN_SECONDS = 0.25
MAX_RERUNS = 10


class _Rerun(BaseException):
    """The command decided on state that was not stored: run it again.

    A BaseException, so that a command's own ``except Exception`` does not swallow it.
    """


class _State(Enum):
    FREE = "free"  # has read nothing yet: needs no turn (it takes one at its first read)
    QUEUED = "queued"
    RUNNING = "running"  # its turn: the commands behind it wait
    STAGED = "staged"  # saved into the batch; waits for the batch's commit
    FINISHED = "finished"  # ended its turn without saving (an error, or nothing to save)
    DETACHED = "detached"  # its turn lasted too long; it goes on outside the batch


def _locked() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


class _Turn:
    """One call of a command: its place in the queue and in a batch, and its outcome."""

    def __init__(self, group: "GroupCommit"):
        self.group = group
        self.state = _State.FREE
        self.batch: _Batch | None = None
        self.depends_on: set[_Turn] = set()  # the commands whose staged state it read
        self.events: list[Any] = []
        self.stored: list[StoredEvent] = []
        self.recordings: list[Recording[UUID]] = []
        self.error: BaseException | None = None
        self.rerun = False
        # Plain locks handed over between threads: cheaper than Events.
        self._started = _locked()  # released when its turn begins
        self._settled = _locked()  # released by the committer: the batch is settled
        self._settled_seen = False

    @property
    def failed(self) -> bool:
        return self.error is not None or self.rerun

    def wait_until_settled(self) -> None:
        if not self._settled_seen:
            self._settled.acquire()
            self._settled_seen = True

    def outcome(self) -> None:
        """Raise what the batch decided for this command, if anything."""
        if self.rerun:
            raise _Rerun
        if self.error is not None:
            raise self.error


class _Batch:
    def __init__(self) -> None:
        self.turns: list[_Turn] = []


@dataclass(frozen=True)
class _Entry:
    """An aggregate in the identity map; ``None`` if it does not exist."""

    aggregate: Any
    batch: _Batch  # the batch that loaded or staged it
    staged_by: _Turn | None  # None: as loaded from the store


_current: ContextVar[_Turn | None] = ContextVar("group_commit_turn", default=None)
_WAKE = object()  # put in the queue to wake the writer: the committer is free, or a
# command joined the open batch


class GroupCommit:
    """Runs one Application's commands in turns and commits each batch at once."""

    def __init__(
        self,
        mapper: Mapper[UUID],
        recorder: ApplicationRecorder,
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        max_turn: float = MAX_TURN_SECONDS,
    ):
        self._mapper = mapper
        self._recorder = recorder
        self.max_batch_size = max_batch_size
        self.max_turn = max_turn
        self._queue: SimpleQueue[_Turn | object | None] = SimpleQueue()
        self._batches: SimpleQueue[_Batch | None] = SimpleQueue()
        self._committer_free = threading.Event()
        self._committer_free.set()
        # The latest state of the aggregates that batches not yet settled read or staged.
        self._aggregates: dict[UUID, _Entry] = {}
        self._mutex = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._waiting = 0
        # The turn that runs now; when it ends, its command starts the next one itself
        # (one thread hand-over per command). The writer only starts a chain of turns
        # and watches that none lasts longer than max_turn.
        self._running: _Turn | None = None
        self._running_since = 0.0
        self._chain_ended = threading.Event()
        self._chain_ended.set()
        self._stopping = False
        self._open_batch = _Batch()  # the batch commands join now
        self._writer_idle = False  # the writer waits for a command: wake it to commit

    # The caller's side

    def run(self, command: Callable[[], R]) -> R:
        """Run ``command`` (get → mutate → save) in its turn; answer once committed."""
        if _current.get() is not None:
            return command()  # called by another command: part of that one's turn
        self._start_threads()
        for _ in range(MAX_RERUNS + 1):
            turn = _Turn(self)
            token = _current.set(turn)
            try:
                result = command()
            except _Rerun:
                continue
            except BaseException:
                self._settle(turn)
                if turn.rerun:
                    continue
                turn.outcome()
                raise
            finally:
                _current.reset(token)
            self._settle(turn)
            if turn.rerun:
                continue
            turn.outcome()
            return result
        raise IntegrityError(f"a command kept meeting concurrent changes ({MAX_RERUNS} reruns)")

    def save(
        self, objs: Sequence[Any], plain_save: Callable[..., list[Recording[UUID]]]
    ) -> list[Recording[UUID]]:
        """Stage the aggregates' new events if a command is in its turn, else save them.

        ``plain_save(*objs)`` is the Application's own save (one transaction).
        """
        turn = _current.get()
        if turn is None or turn.group is not self:
            return plain_save(*objs)
        with self._mutex:
            staging = turn.state in (_State.RUNNING, _State.FREE)
            if turn.state is _State.FREE:  # it read nothing: it joins the open batch
                turn.batch = self._open_batch
                turn.batch.turns.append(turn)
                self._stage(turn, objs)
                self._wake_writer()
            elif staging:
                self._stage(turn, objs)
                self._pass_turn(turn.batch)
        turn.wait_until_settled()
        turn.outcome()
        if staging:
            return turn.recordings
        # Detached, or a second save of the same command: what it read is settled and
        # stored, so an ordinary save (optimistic concurrency) is right.
        return plain_save(*objs)

    def read(self, aggregate_id: UUID, load: Callable[[], Any]) -> Any:
        """The aggregate as the commands before this one left it (a copy of its own)."""
        turn = _current.get()
        if turn is None or turn.group is not self:
            return load()
        if turn.state is _State.FREE:  # its first read: from now on it needs its turn
            self._enqueue(turn)
            turn._started.acquire()
        if turn.state is not _State.RUNNING:
            return load()
        assert turn.batch is not None
        entry = self._aggregates.get(aggregate_id)
        if entry is None:
            try:
                loaded = load()
            except AggregateNotFoundError:
                loaded = None
            with self._mutex:
                if turn.state is not _State.RUNNING:
                    # Detached while loading: its batch may be committed already, and an
                    # entry of a committed batch would never leave the map (stale reads).
                    if loaded is None:
                        raise AggregateNotFoundError(aggregate_id)
                    return loaded
                entry = self._aggregates.setdefault(aggregate_id, _Entry(loaded, turn.batch, None))
        if entry.staged_by is not None and entry.staged_by is not turn:
            with self._mutex:
                turn.depends_on.add(entry.staged_by)
        if entry.aggregate is None:
            raise AggregateNotFoundError(aggregate_id)
        return deepcopy(entry.aggregate)

    def waiting(self) -> int:
        """How many commands are queued for a turn."""
        return self._waiting

    def close(self) -> None:
        """Finish what is queued, then stop."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
        if self._threads:
            self._queue.put(None)
            for thread in self._threads:
                thread.join()

    def _start_threads(self) -> None:
        with self._mutex:
            if self._closed:
                raise RuntimeError("the application is closed")
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._write, name="group-commit-writer", daemon=True),
                    threading.Thread(
                        target=self._commit_batches, name="group-commit-committer", daemon=True
                    ),
                ]
                for thread in self._threads:
                    thread.start()

    def _enqueue(self, turn: _Turn) -> None:
        with self._mutex:
            turn.state = _State.QUEUED
            self._waiting += 1
            self._queue.put(turn)

    def _wake_writer(self) -> None:
        """Under the mutex: a command joined the open batch; the writer may commit it."""
        if self._writer_idle:
            self._writer_idle = False
            self._queue.put(_WAKE)

    def _stage(self, turn: _Turn, objs: Sequence[Any]) -> None:
        """Under the mutex: the command's events join its batch; its turn is over."""
        assert turn.batch is not None
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        processing.collect_events(*objs)
        turn.events = processing.events
        # Encoded here, in the command's context (its message metadata).
        turn.stored = [self._mapper.to_stored_event(event) for event in turn.events]
        for event in turn.events:
            aggregate = processing.aggregates.get(event.originator_id)
            if aggregate is None:  # an event saved without its aggregate: read it again
                self._aggregates.pop(event.originator_id, None)
            else:
                self._aggregates[event.originator_id] = _Entry(aggregate, turn.batch, turn)
        turn.state = _State.STAGED

    def _settle(self, turn: _Turn) -> None:
        """End the turn (if the command did not save) and wait for its batch."""
        if turn.state is _State.FREE:
            return  # it read and saved nothing: its answer is its own
        with self._mutex:
            if turn.state is _State.RUNNING:
                turn.state = _State.FINISHED
                self._pass_turn(turn.batch)
        turn.wait_until_settled()

    def _pass_turn(self, batch: _Batch | None) -> None:
        """Under the mutex: start the next queued command in ``batch``, or end the chain."""
        assert batch is not None
        while len(batch.turns) < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except Empty:
                break
            if isinstance(item, _Turn):
                self._start(item, batch)
                return
            if item is None:
                self._stopping = True
                break
        self._running = None
        self._chain_ended.set()

    def _start(self, turn: _Turn, batch: _Batch) -> None:
        """Under the mutex: ``turn`` runs now, in ``batch``."""
        turn.batch = batch
        batch.turns.append(turn)
        self._waiting -= 1
        turn.state = _State.RUNNING
        self._running = turn
        self._running_since = time.monotonic()
        turn._started.release()

    # The writer's side: turns

    def _write(self) -> None:
        while True:
            with self._mutex:
                batch = self._open_batch
                full = len(batch.turns) >= self.max_batch_size
                ready = bool(batch.turns) and (
                    full or self._stopping or self._committer_free.is_set()
                )
                if ready:
                    self._open_batch = _Batch()
                elif self._stopping:
                    break
                else:
                    self._writer_idle = True
            if ready:
                self._committer_free.wait()
                self._committer_free.clear()
                self._batches.put(batch)
                continue
            # A command, a wake-up (the committer is free, a command joined), or None.
            item = self._queue.get()
            with self._mutex:
                self._writer_idle = False
                if item is None:
                    self._stopping = True
                elif isinstance(item, _Turn):
                    self._chain_ended.clear()
                    self._start(item, self._open_batch)
            self._watch_chain(self._open_batch)
        self._batches.put(None)

    def _watch_chain(self, batch: _Batch) -> None:
        """Wait until the chain of turns ends; detach a command that holds its turn."""
        while not self._chain_ended.wait(timeout=self.max_turn / 2):
            with self._mutex:
                turn = self._running
                if turn is not None and time.monotonic() - self._running_since > self.max_turn:
                    turn.state = _State.DETACHED
                    self._pass_turn(batch)

    # The committer's side: one transaction per batch, in order

    def _commit_batches(self) -> None:
        while (batch := self._batches.get()) is not None:
            self._commit(batch)
            self._committer_free.set()
            self._queue.put(_WAKE)

    def _commit(self, batch: _Batch) -> None:
        try:
            self._insert(batch)
        except BaseException as error:  # noqa: BLE001 - a bug: every caller must be told
            for turn in batch.turns:
                if not turn.failed:
                    turn.error = error
        finally:
            with self._mutex:
                # Stored now, or never: later reads go to the store.
                self._aggregates = {
                    aggregate_id: entry
                    for aggregate_id, entry in self._aggregates.items()
                    if entry.batch is not batch
                }
            for turn in batch.turns:
                turn._settled.release()

    def _insert(self, batch: _Batch) -> None:
        with self._mutex:  # a detached command may still be reading
            staged = [turn for turn in batch.turns if turn.state is _State.STAGED]
        conflicted = _conflicts_within(staged)
        while True:
            _fail(batch, conflicted)
            saving = [turn for turn in staged if not turn.failed and turn.stored]
            if not saving:
                return
            stored = [event for turn in saving for event in turn.stored]
            try:
                notification_ids = self._recorder.insert_events(stored)
            except IntegrityError as error:
                conflicted = self._conflicts_with_store(saving)
                if not conflicted:
                    _fail_all(batch, saving, error)
                    return
                continue
            except PersistenceError as error:  # rolled back: nothing of the batch is stored
                _fail_all(batch, saving, error)
                return
            assert notification_ids is not None and len(notification_ids) == len(stored)
            ids = iter(notification_ids)
            for turn in saving:
                turn.recordings = [
                    Recording(event, _notification(stored_event, next(ids)))
                    for event, stored_event in zip(turn.events, turn.stored, strict=True)
                ]
            return

    def _conflicts_with_store(self, saving: list[_Turn]) -> set[_Turn]:
        """The commands whose first event of an aggregate the store already holds."""
        first: dict[UUID | str, tuple[int, _Turn]] = {}
        for turn in saving:
            for event in turn.stored:
                first.setdefault(event.originator_id, (event.originator_version, turn))
        return {
            turn
            for originator_id, (version, turn) in first.items()
            if self._recorder.select_events(originator_id, gt=version - 1, limit=1)
        }


def _conflicts_within(staged: list[_Turn]) -> set[_Turn]:
    """Commands staging a version an earlier command of the batch staged too."""
    seen: set[tuple[UUID | str, int]] = set()
    conflicted = set()
    for turn in staged:
        versions = {(e.originator_id, e.originator_version) for e in turn.stored}
        if versions & seen:
            conflicted.add(turn)
        else:
            seen |= versions
    return conflicted


def _fail(batch: _Batch, conflicted: set[_Turn]) -> None:
    """Fail the conflicted commands; rerun those that read what a failed one staged.

    A command depends only on commands before it (in its batch or in an earlier one,
    settled already), so one pass in arrival order is enough.
    """
    for turn in batch.turns:
        if turn in conflicted:
            turn.error = IntegrityError(
                "the aggregate was changed by another writer since this command read it"
            )
        elif not turn.failed and any(earlier.failed for earlier in turn.depends_on):
            turn.rerun = True


def _fail_all(batch: _Batch, saving: list[_Turn], error: PersistenceError) -> None:
    """The insert failed: the commands it held fail with its error, their readers rerun."""
    for turn in saving:
        turn.error = error
    _fail(batch, set())


def _notification(stored: StoredEvent, notification_id: int) -> Notification:
    return Notification(
        id=notification_id,
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=stored.state,
    )


class BatchingRepository(Repository[UUID]):
    """The Application's repository; inside a command's turn it reads the batch's state."""

    def __init__(self, group_commit: GroupCommit, **kwargs: Any):
        super().__init__(**kwargs)
        self._group_commit = group_commit

    def get(self, aggregate_id: UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        if version is not None:
            return super().get(aggregate_id, version=version, **kwargs)
        load = super().get
        return self._group_commit.read(aggregate_id, lambda: load(aggregate_id, **kwargs))


class HasGroupCommit(Protocol):
    group_commit: GroupCommit


App = TypeVar("App", bound=HasGroupCommit)


def command(method: Callable[Concatenate[App, P], R]) -> Callable[Concatenate[App, P], R]:
    """Mark an Application method as a command: it runs in a turn of the group commit.

    The method stays plain get → mutate → save; it answers once its batch is committed.
    """

    @wraps(method)
    def in_turn(self: App, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.group_commit.run(lambda: method(self, *args, **kwargs))

    return in_turn
