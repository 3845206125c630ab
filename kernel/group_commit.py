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
Whoever finds the open batch due (a command that joined it, a command whose turn
ended, the committer when it is done) hands it to the committer: no extra thread
hand-over on the way.

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
  unstored state). If that save meets a version the commands behind it stored, the
  command is run again: the race was the batching's, not its caller's.
- ``close()`` lets the commands in that have joined a batch or the queue, commits them
  and answers them; a command that gets that far only after ``close()`` is refused
  (``ApplicationClosed``), having changed nothing.

Messages a saga worker consumes take the same path (:meth:`GroupCommit.run_in_order`):
their commands queue together, in the messages' order, and run one after another in the
worker's thread, each in a turn of its own, so they share a batch (one transaction) with
the tracking records of the messages they handle (the inbox: one row per topic
partition, advanced to the batch's last offset only if no message of the batch was
recorded before). A command of a message runs after the one before it of the same
partition and fails with it, so the inbox never counts a message whose effects were not
stored; a domain error is the command's own business (it records a failure instead).
After the commit, aggregates whose version reached their snapshotting interval are
snapshotted (``on_committed``), as ``Application.save`` does.

Why, and what it costs: docs/adr/0015-group-commit-on-the-write-side.md.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from copy import deepcopy
from dataclasses import dataclass, replace
from enum import Enum
from functools import wraps
from queue import Empty, SimpleQueue
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent, Repository
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Mapper,
    Notification,
    PersistenceError,
    ProgrammingError,
    Recording,
    StoredEvent,
    Tracking,
)

from kernel import metrics
from kernel.errors import ApplicationClosed, DomainError, NotFound
from kernel.store import IdempotencyClaim, IdempotencyConflict, InboxConflict
from kernel.tracing import outside_traces

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

    def __init__(self, group: "GroupCommit", inbox: tuple[str, int, int] | None = None):
        self.group = group
        self.state = _State.FREE
        self.batch: _Batch | None = None
        # The commands whose staged state it read (and, run in order, the one before it
        # of the same message partition).
        self.depends_on: set[_Turn] = set()
        # Run in order (``run_in_order``): the positions it records in its partition's
        # inbox with its events (name, first, last); its save does not wait for the commit.
        self.inbox = inbox
        # The Idempotency-Key of the request that runs it, recorded with its events.
        self.claim: IdempotencyClaim | None = None
        self.events: list[Any] = []
        self.aggregates: dict[UUID, Any] = {}
        self.stored: list[StoredEvent] = []
        self.recordings: list[Recording[UUID]] = []
        self.error: BaseException | None = None
        self.rerun = False
        # Detached, it saved in a transaction of its own (a later save is another one).
        self.saved_alone = False
        # Plain locks handed over between threads: cheaper than Events.
        self._started: threading.Lock | None = None  # released when its turn begins
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


_MAY_STAGE = (_State.FREE, _State.RUNNING)


class _Staged:
    """A save's new events, collected from its aggregates and encoded."""

    def __init__(self, objs: Sequence[Any], mapper: Mapper[UUID]):
        self.events: list[Any] = []
        self.aggregates: dict[UUID, Any] = {}
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                # What ProcessingEvent.collect_events does, without its two runtime
                # Protocol checks (about 14 µs an aggregate on CPython 3.11).
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            else:
                processing: ProcessingEvent[UUID] = ProcessingEvent()
                processing.collect_events(obj)
                self.events.extend(processing.events)
                self.aggregates.update(processing.aggregates)
        # Encoded in the command's context (its message metadata).
        self.stored = [mapper.to_stored_event(event) for event in self.events]


@dataclass(frozen=True)
class Settled(Generic[R]):
    """How a command run by ``run_in_order`` ended, once its batch was settled."""

    value: R | None = None  # what it returned, if it was stored (or had nothing to store)
    error: BaseException | None = None  # what it raised, or why its batch refused it
    rerun: bool = False  # it depended on a command that failed: run it again

    @property
    def done(self) -> bool:
        return self.error is None and not self.rerun


@dataclass(frozen=True)
class _Entry:
    """An aggregate in the identity map; ``None`` if it does not exist."""

    aggregate: Any
    batch: _Batch  # the batch that loaded or staged it
    staged_by: _Turn | None  # None: as loaded from the store


_current: ContextVar[_Turn | None] = ContextVar("group_commit_turn", default=None)


class RequestClaim:
    """A request's Idempotency-Key, for the first command the request runs.

    Set for the request with :func:`claiming`; once that command's events are stored
    with the key, ``recorded`` is true. A command whose key the store holds already
    raises ``IdempotencyConflict`` and changes nothing.
    """

    def __init__(self, claim: IdempotencyClaim):
        self.claim = claim
        self.taken = False
        self.recorded = False
        self.refused = False  # the store holds the key: a copy of this request was first

    def take(self) -> IdempotencyClaim | None:
        if self.taken:
            return None
        self.taken = True
        return self.claim


_request_claim: ContextVar[RequestClaim | None] = ContextVar("request_claim", default=None)


def claiming(claim: IdempotencyClaim) -> RequestClaim:
    """Record ``claim`` with the events of the next command run in this context."""
    request = RequestClaim(claim)
    _request_claim.set(request)
    return request


class GroupCommit:
    """Runs one Application's commands in turns and commits each batch at once."""

    def __init__(
        self,
        mapper: Mapper[UUID],
        recorder: ApplicationRecorder,
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        max_turn: float = MAX_TURN_SECONDS,
        on_committed: Callable[[Sequence[Any], dict[UUID, Any]], None] | None = None,
        name: str = "",
    ):
        """``on_committed(events, aggregates)`` runs in the command's thread once its
        events are stored (the Application's automatic snapshots). ``name``: the
        service, as its metrics say (``cqrs_commands_total``, the batch sizes)."""
        self.name = name
        self._mapper = mapper
        self._recorder = recorder
        self._on_committed = on_committed
        self.max_batch_size = max_batch_size
        self.max_turn = max_turn
        self._queue: SimpleQueue[_Turn | None] = SimpleQueue()
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
        self._ready: deque[_Batch] = deque()  # closed batches, in order, to be committed
        self._committing = False  # the committer has a batch: the open one grows meanwhile
        self._committer_waits = False
        self._work = threading.Condition(self._mutex)  # wakes the committer

    # The caller's side

    def run(self, command: Callable[[], R]) -> R:
        """Run ``command`` (get → mutate → save) in its turn; answer once committed."""
        if _current.get() is not None:
            return command()  # called by another command: part of that one's turn
        self._start_threads()
        request = _request_claim.get()
        claim = request.take() if request is not None else None
        try:
            result = self._run(command, request, claim)
        except IdempotencyConflict:
            if request is not None and claim is not None:
                request.refused = True
            metrics.command_outcome(self.name, "conflict")
            raise
        except BaseException as error:
            metrics.command_outcome(self.name, _outcome(error))
            raise
        metrics.command_outcome(self.name, "ok")
        return result

    def _run(
        self,
        command: Callable[[], R],
        request: RequestClaim | None,
        claim: IdempotencyClaim | None,
    ) -> R:
        for _ in range(MAX_RERUNS + 1):
            turn = _Turn(self)
            turn.claim = claim
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
            if request is not None and claim is not None and turn.state is _State.STAGED:
                request.recorded = True
            return result
        raise IntegrityError(f"a command kept meeting concurrent changes ({MAX_RERUNS} reruns)")

    def run_in_order(
        self, commands: Sequence[Callable[[], R] | None], trackings: Sequence[Tracking]
    ) -> list[Settled[R]]:
        """Run the commands of consumed messages one after another in this thread, each
        in a turn of its own, their turns queued together in this order; answer once all
        are settled. Each command's events are stored with its message's position
        (``tracking``); a message with no command (``None``) is only recorded, in the
        turn of the command before it of its partition (or after, or in a turn of its
        own for a partition with no command).

        A command's ``save`` stages its events and returns at once (no recordings): it
        must be the command's last step. A command that raises records nothing; so do
        the messages after it of the same partition (their commands rerun). Nothing is
        retried here: the caller decides what to run again.
        """
        assert len(commands) == len(trackings)
        if _current.get() is not None:
            raise ProgrammingError("run_in_order is not for use inside a command")
        self._start_threads()
        runs, covering = _turns_in_order(self, commands, trackings)
        with self._mutex:
            self._refuse_if_closed()
            for _, turn in runs:
                self._queue_locked(turn)
        values: dict[_Turn, R | None] = {}
        for command, turn in runs:
            assert turn._started is not None
            turn._started.acquire()  # the turn before it (of ours, or another's) has ended
            error = None
            if command is not None:
                token = _current.set(turn)
                try:
                    values[turn] = command()
                except BaseException as raised:  # noqa: BLE001 - reported in its Settled
                    error = raised
                finally:
                    _current.reset(token)
            with self._mutex:
                if turn.state is _State.RUNNING:  # it did not save
                    if error is None:
                        self._stage(turn, _Staged((), self._mapper))  # its position alone
                    else:
                        turn.error = error
                        turn.state = _State.FINISHED
                    self._pass_turn(turn.batch)
                elif error is not None:  # raised after its save: a bug; not counted as done
                    turn.error = error
        for _, turn in runs:
            turn.wait_until_settled()
        for _, turn in runs:
            if not turn.failed:
                self._committed(turn)
        settled: list[Settled[R]] = []
        for command, turn in zip(commands, covering, strict=True):
            if turn.rerun or (turn.error is not None and command is None):
                settled.append(Settled(rerun=True))  # its position was not recorded
            elif turn.error is not None:
                settled.append(Settled(error=turn.error))
            else:
                settled.append(Settled(value=values.get(turn) if command is not None else None))
        if metrics.enabled():
            for command, outcome in zip(commands, settled, strict=True):
                if command is not None and not outcome.rerun:
                    error = outcome.error
                    metrics.command_outcome(self.name, "ok" if error is None else _outcome(error))
        return settled

    def save(
        self, objs: Sequence[Any], plain_save: Callable[..., list[Recording[UUID]]]
    ) -> list[Recording[UUID]]:
        """Stage the aggregates' new events if a command is in its turn, else save them.

        ``plain_save(*objs)`` is the Application's own save (one transaction).
        """
        turn = _current.get()
        if turn is None or turn.group is not self:
            return plain_save(*objs)
        # Collected and encoded before taking the mutex, which every command takes: the
        # commands encode side by side (and an encoding error fails only this command).
        staged = _Staged(objs, self._mapper) if turn.state in _MAY_STAGE else None
        with self._mutex:
            staging = staged is not None and turn.state in _MAY_STAGE
            if turn.state is _State.FREE:  # it read nothing: it joins the open batch
                self._refuse_if_closed()
                turn.batch = self._open_batch
                turn.batch.turns.append(turn)
                self._stage(turn, staged)
                self._close_batch()
            elif staging:
                self._stage(turn, staged)
                self._pass_turn(turn.batch)
        if turn.inbox is not None:  # run in order: the caller waits for the batch
            if not staging:
                raise ProgrammingError("a command run in order saves once, as its last step")
            return []
        turn.wait_until_settled()
        turn.outcome()
        if staging:
            self._committed(turn)
            return turn.recordings
        # Detached, or a second save of the same command: what it read is settled and
        # stored, so an ordinary save (optimistic concurrency) is right.
        if turn.state is not _State.DETACHED or turn.saved_alone:
            return plain_save(*objs)
        try:
            recordings = self._save_detached(turn, objs, plain_save)
        except IdempotencyConflict:
            raise  # the same request was handled before: not a race
        except IntegrityError:
            # The commands behind it went on without it and changed what it read: a
            # conflict of the batching's making, not the caller's, so it runs again.
            raise _Rerun from None
        turn.saved_alone = True
        return recordings

    @staticmethod
    def _save_detached(
        turn: _Turn, objs: Sequence[Any], plain_save: Callable[..., list[Recording[UUID]]]
    ) -> list[Recording[UUID]]:
        """A detached command's first save, in a transaction of its own (with its
        request's Idempotency-Key, if any)."""
        if turn.claim is None:
            return plain_save(*objs)
        saved = ((obj.id, obj.version) for obj in objs if isinstance(obj, BaseAggregate))
        recordings = plain_save(*objs, idempotency=[_with_saved(turn.claim, saved)])
        turn.claim = None
        request = _request_claim.get()
        if request is not None:
            request.recorded = True
        return recordings

    def read(self, aggregate_id: UUID, load: Callable[[], Any]) -> Any:
        """The aggregate as the commands before this one left it (a copy of its own)."""
        turn = _current.get()
        if turn is None or turn.group is not self:
            return load()
        if turn.state is _State.FREE:  # its first read: from now on it needs its turn
            self._enqueue(turn).acquire()
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

    def _refuse_if_closed(self) -> None:
        """Under the mutex: a command that joins no batch and holds no turn yet when the
        application closes is refused (the writer and the committer may have stopped:
        nothing would give it a turn or commit it). It has changed nothing."""
        if self._closed:
            raise ApplicationClosed("the application is closed")

    def _start_threads(self) -> None:
        if self._threads and not self._closed:
            return  # started: no need to take the mutex
        with self._mutex:
            self._refuse_if_closed()
            if not self._threads:
                # They serve every command and belong to no trace (kernel.tracing).
                self._threads = [
                    threading.Thread(
                        target=outside_traces(self._write), name="group-commit-writer", daemon=True
                    ),
                    threading.Thread(
                        target=outside_traces(self._commit_batches),
                        name="group-commit-committer",
                        daemon=True,
                    ),
                ]
                for thread in self._threads:
                    thread.start()

    def _enqueue(self, turn: _Turn) -> threading.Lock:
        """Queue the command for a turn; the lock it gets is released when it starts."""
        with self._mutex:
            self._refuse_if_closed()
            return self._queue_locked(turn)

    def _queue_locked(self, turn: _Turn) -> threading.Lock:
        """Under the mutex: queue the command for a turn."""
        turn._started = started = _locked()
        turn.state = _State.QUEUED
        self._waiting += 1
        self._queue.put(turn)
        return started

    def _committed(self, turn: _Turn) -> None:
        """In the command's thread, once its events are stored."""
        if self._on_committed is not None and turn.events:
            self._on_committed(turn.events, turn.aggregates)

    def _close_batch(self) -> None:
        """Under the mutex: hand the open batch to the committer, if it is time.

        It is time when the committer is free (commit at once: lowest latency) or the
        batch is full; while the committer is busy the batch grows. Never while a chain
        of turns runs in it: that command has not staged yet. Whoever finds it is time
        closes it (a command that joined, a command whose turn ended, the committer when
        it is done): no thread hand-over but the one to the committer, if it waits.
        """
        batch = self._open_batch
        if not batch.turns or self._running is not None:
            return
        full = len(batch.turns) >= self.max_batch_size
        if self._committing and not full and not self._stopping:
            return
        self._ready.append(batch)
        self._open_batch = _Batch()
        self._committing = True
        if self._committer_waits:
            self._work.notify()

    def _stop(self) -> None:
        """Under the mutex: no more commands; the committer ends once all is committed."""
        self._stopping = True
        self._close_batch()
        if self._committer_waits:
            self._work.notify()

    def _stage(self, turn: _Turn, staged: "_Staged | None") -> None:
        """Under the mutex: the command's events join its batch; its turn is over."""
        assert turn.batch is not None and staged is not None
        turn.events = staged.events
        turn.stored = staged.stored
        turn.aggregates = staged.aggregates
        for event in turn.events:
            aggregate = staged.aggregates.get(event.originator_id)
            if aggregate is None:  # an event saved without its aggregate: read it again
                self._aggregates.pop(event.originator_id, None)
            else:
                self._aggregates[event.originator_id] = _Entry(aggregate, turn.batch, turn)
        turn.state = _State.STAGED

    def _settle(self, turn: _Turn) -> None:
        """End the turn (if the command did not save) and wait for its batch."""
        if turn.state is _State.FREE:
            return  # it read and saved nothing: its answer is its own
        if turn.state is _State.STAGED:  # its turn is over (and it stays STAGED)
            turn.wait_until_settled()
            return
        with self._mutex:
            if turn.state is _State.RUNNING:
                turn.state = _State.FINISHED
                self._pass_turn(turn.batch)
        turn.wait_until_settled()

    def _pass_turn(self, batch: _Batch | None) -> None:
        """Under the mutex: start the next queued command in ``batch``, or end the chain."""
        assert batch is not None
        stop = False
        while len(batch.turns) < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except Empty:
                break
            if item is None:
                stop = True
                break
            self._start(item, batch)
            return
        self._running = None
        self._chain_ended.set()
        self._close_batch()
        if stop:
            self._stop()

    def _start(self, turn: _Turn, batch: _Batch) -> None:
        """Under the mutex: ``turn`` runs now, in ``batch``."""
        turn.batch = batch
        batch.turns.append(turn)
        self._waiting -= 1
        turn.state = _State.RUNNING
        self._running = turn
        self._running_since = time.monotonic()
        assert turn._started is not None
        turn._started.release()

    # The writer's side: turns

    def _write(self) -> None:
        """Start a chain of turns for each command that reads; stop at ``None``."""
        while True:
            item = self._queue.get()
            with self._mutex:
                if item is None:
                    self._stop()
                    return
                self._chain_ended.clear()
                batch = self._open_batch
                self._start(item, batch)
            self._watch_chain(batch)
            with self._mutex:
                if self._stopping:  # the chain's last turn took the None
                    return

    def _watch_chain(self, batch: _Batch) -> None:
        """Wait until the chain of turns ends; detach a command that holds its turn."""
        while not self._chain_ended.wait(timeout=self.max_turn / 2):
            with self._mutex:
                turn = self._running
                # A command run in order is not detached: the ones after it (of its
                # partition) wait for it in its caller's thread anyway.
                if (
                    turn is not None
                    and turn.inbox is None
                    and time.monotonic() - self._running_since > self.max_turn
                ):
                    turn.state = _State.DETACHED
                    self._pass_turn(batch)

    # The committer's side: one transaction per batch, in order

    def _commit_batches(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._commit(batch)

    def _next_batch(self) -> _Batch | None:
        """The next batch, in order (what gathered while the last one was committed);
        ``None`` once stopped with everything committed."""
        with self._mutex:
            while True:
                if not self._ready:
                    self._committing = False
                    self._close_batch()
                if self._ready:
                    return self._ready.popleft()
                if self._stopping and self._running is None:
                    return None
                self._committer_waits = True
                self._work.wait()
                self._committer_waits = False

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
        _refuse_claims(_repeated_claims(staged))
        while True:
            _fail(batch, conflicted)
            saving = [
                turn
                for turn in staged
                if not turn.failed and (turn.stored or turn.inbox or turn.claim)
            ]
            if not saving:
                return
            stored = [event for turn in saving for event in turn.stored]
            recording: dict[str, Any] = {}
            if inbox := _inbox(saving):
                recording["inbox"] = inbox
            if claims := [
                _with_saved(
                    turn.claim, ((e.originator_id, e.originator_version) for e in turn.events)
                )
                for turn in saving
                if turn.claim is not None
            ]:
                recording["idempotency"] = claims
            try:
                notification_ids = self._recorder.insert_events(stored, **recording)
            except InboxConflict as conflict:  # handled already, by another worker
                conflicted = {
                    turn
                    for turn in saving
                    if turn.inbox is not None and turn.inbox[0] in conflict.names
                }
                continue
            except IdempotencyConflict as conflict:  # the same request, seen before
                _refuse_claims(
                    [t for t in saving if t.claim is not None and t.claim.key in conflict.keys]
                )
                conflicted = set()
                continue
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
            metrics.group_commit_batch(self.name, len(saving))
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


def _outcome(error: BaseException) -> str:
    """A command's outcome label for an error it ended with."""
    if isinstance(error, DomainError | NotFound | AggregateNotFoundError):
        return "rejected"
    if isinstance(error, IntegrityError):
        return "conflict"
    return "error"


def _turns_in_order(
    group: GroupCommit,
    commands: Sequence[Callable[[], R] | None],
    trackings: Sequence[Tracking],
) -> tuple[list[tuple[Callable[[], R] | None, _Turn]], list[_Turn]]:
    """The turns of ``run_in_order``, in order, each with its command (``None``: it only
    records its partition's position), and the turn recording each message.

    A turn records a range of its partition's positions: from the first message not
    recorded by an earlier turn to the last before the next command. A turn depends on
    the one before it of its partition: recorded in order, or not at all.
    """
    runs: list[tuple[Callable[[], R] | None, _Turn]] = []
    covering: list[_Turn | None] = []
    last: dict[str, _Turn] = {}
    uncovered: dict[str, list[int]] = {}  # messages before their partition's first command
    for index, (command, tracking) in enumerate(zip(commands, trackings, strict=True)):
        name, position = tracking.application_name, tracking.notification_id
        before = last.get(name)
        if command is None and before is not None:
            assert before.inbox is not None
            before.inbox = (name, before.inbox[1], position)
            covering.append(before)
            continue
        if command is None:
            uncovered.setdefault(name, []).append(index)
            covering.append(None)
            continue
        waiting = uncovered.pop(name, [])
        first = trackings[waiting[0]].notification_id if waiting else position
        turn = _Turn(group, (name, first, position))
        if before is not None:
            turn.depends_on.add(before)
        last[name] = turn
        runs.append((command, turn))
        for earlier in waiting:
            covering[earlier] = turn
        covering.append(turn)
    for name, waiting in uncovered.items():  # a partition with nothing to run
        positions = (trackings[waiting[0]].notification_id, trackings[waiting[-1]].notification_id)
        turn = _Turn(group, (name, *positions))
        runs.append((None, turn))
        for earlier in waiting:
            covering[earlier] = turn
    assert all(turn is not None for turn in covering)
    return runs, [turn for turn in covering if turn is not None]


def _inbox(saving: list[_Turn]) -> dict[str, tuple[int, int]]:
    """Per partition, the first and the last position the batch records.

    The inbox keeps one row per partition, the next position to handle: it moves to the
    last, provided no position from the first on was recorded before.
    """
    inbox: dict[str, tuple[int, int]] = {}
    for turn in saving:
        if turn.inbox is not None:
            name, first, last = turn.inbox
            first = min(first, inbox.get(name, (first, last))[0])
            inbox[name] = (first, last)
    return inbox


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


def _with_saved(claim: IdempotencyClaim, saved: Iterable[tuple[UUID, int]]) -> IdempotencyClaim:
    """The claim with what its command saved: each aggregate's id and its new version."""
    return replace(claim, saved=tuple({str(id_): version for id_, version in saved}.items()))


def _repeated_claims(staged: list[_Turn]) -> list[_Turn]:
    """Commands claiming a key an earlier command of the batch claims too."""
    seen: set[str] = set()
    repeated = []
    for turn in staged:
        if turn.claim is not None:
            if turn.claim.key in seen:
                repeated.append(turn)
            seen.add(turn.claim.key)
    return repeated


def _refuse_claims(turns: list[_Turn]) -> None:
    """Fail commands whose request was handled before: they change nothing."""
    for turn in turns:
        assert turn.claim is not None
        turn.error = IdempotencyConflict([turn.claim.key])


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
