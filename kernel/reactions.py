"""Saga reactions: another service's event → a local command, exactly once in effect.

A reaction maps the event to one of the service's ``@command`` methods and calls it on
the Application its worker opened (handlers are plain functions taking it first); the
command is get → mutate → save, as for an HTTP request. A saga worker hands its
Reactor a batch of consumed messages at a time. The batch's reactions run through the
service's group commit (``GroupCommit.run_in_order``), in the messages' order, each in a
turn of its own (a command called inside a turn runs in it, and its save stages its
events there), so they share one transaction: a later reaction sees what an earlier one
staged, and the transaction also records each partition's position (eventsourcing
``Tracking`` records: the inbox). A message whose
position is recorded already (re-delivered after a crash) is not handled again; a
re-published copy (same event at a new offset) meets aggregates whose ids derive from
the order, so handlers see the work is done and save nothing new.

- Unreadable messages (bad bytes, unknown types, contract violations) go to the
  dead-letter topic; known event types the service does not react to are recorded as
  handled, with no effect.
- Infrastructure errors propagate, and the worker retries the batch.
- A concurrency conflict (another writer changed an aggregate) runs the reaction again,
  on fresh state, with those after it of the same partition.
- Any other error is permanent: the reaction's ``on_failure`` turns it into the step's
  failure event, so the saga still ends; without one (or if it fails too), the message
  is dead-lettered with the error. It fails only its own message.

A dead letter is sent before its message's position is recorded (a crash in between
sends it again). Unreadable messages are found before anything runs: the worker sends
their dead letters, then the batch runs with them recorded as handled. A reaction that
fails with no failure to record ends its round for its partition: the batch records what
came before it, the worker sends the dead letter, and the next round records it and runs
the partition's messages after it again.
"""

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from eventsourcing.persistence import IntegrityError, Tracking

from contracts.base import ContractEvent
from contracts.envelope import Envelope
from kernel import metrics, tracing
from kernel.application import App
from kernel.logs import context_fields, milestones
from kernel.messaging import ConsumedMessage, EventReader, Reason
from kernel.metadata import MessageMetadata, caused_by
from kernel.streams import TRANSIENT_ERRORS

log = logging.getLogger(__name__)
milestone = milestones(__name__)

Event = TypeVar("Event", bound=ContractEvent)

Handler = Callable[[App, Event, Envelope], object]
"""Takes the service's Application, the contract event and its envelope; calls the
command it maps to (which saves, as its last step, at most once). What it returns is
ignored, but a ``SagaEnded``: logged and counted once the reaction's batch is committed."""

FailureHandler = Callable[[App, Event, Envelope, str], object]
"""Takes the Application, the event, its envelope and the error; calls the command
recording the failure."""

MAX_ROUNDS = 20
"""Rounds of one batch (conflicts, dead letters) before the worker retries it later."""

MessageKey = tuple[str, int, int]
"""A message's topic, partition and offset."""


@dataclass(frozen=True)
class SagaEnded:
    """What a reaction returns when its command ended a saga (a re-delivery that changed
    nothing returns none). Once the reaction's batch is committed, the saga's end is
    logged (one line, with the ids of the step's trace and correlation) and counted
    (``cqrs_sagas_ended_total``): a command run again, its batch retried, does neither
    twice."""

    saga: str
    saga_id: str
    outcome: str
    started: datetime
    """When the saga began (its first event's time, timezone-aware)."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """More for the log line (a rejection's step and reason); the kernel adds the step's
    ``trace_id``, ``span_id`` and ``correlation_id``."""

    def record(self) -> None:
        milestone.info(
            "saga ended: %s %s %s",
            self.saga,
            self.saga_id,
            self.outcome,
            extra={"saga_id": self.saga_id, "outcome": self.outcome, **self.fields},
        )
        metrics.saga_ended(self.saga, self.outcome, self.started)


@dataclass(frozen=True)
class Reaction(Generic[App, Event]):
    """What a service does with another's ``event``: ``handle`` it, or, if that fails for
    good, record the failure (``on_failure``). mypy checks that the handlers take that
    event and the worker's Application."""

    event: type[Event]
    handle: Handler[App, Event]
    on_failure: FailureHandler[App, Event] | None = None


@dataclass
class Round:
    """What one round of a batch left to do."""

    dead_letters: list[tuple[ConsumedMessage, Reason]] = field(default_factory=list)
    """To send now; their messages are in ``again``, to be recorded as handled."""
    again: list[ConsumedMessage] = field(default_factory=list)
    """To hand to the next round, in order (after the dead letters were sent)."""
    error: BaseException | None = None
    """An infrastructure error: retry the batch once the dead letters are sent."""


class _DeadLetter(Exception):
    """The message must go to the dead-letter topic: its reaction records nothing."""

    def __init__(self, reason: Reason):
        super().__init__(reason)
        self.reason = reason


def key_of(message: ConsumedMessage) -> MessageKey:
    return (message.topic, message.partition, message.offset)


class Reactor(Generic[App]):
    """Runs one service's reactions, on its Application, on the messages its saga worker
    consumes."""

    def __init__(self, app: App, consumer: str, reactions: Sequence[Reaction[App, Any]]):
        self.app = app
        self.consumer = consumer
        self.reactions = {reaction.event.type(): reaction for reaction in reactions}
        self.reader = EventReader([reaction.event for reaction in reactions])
        # Each partition's inbox position as this worker last read or wrote it. Only a
        # batch's commit moves it, and its compare-and-set refuses a batch that holds a
        # message recorded since (another worker's, after a rebalance): then it is read
        # again. So a batch costs no query for the positions.
        self._positions: dict[str, int] = {}

    def tracking(self, message: ConsumedMessage) -> Tracking:
        # Kafka's convention: the position to record is the next offset to read.
        return Tracking(f"{self.consumer}:{message.topic}:{message.partition}", message.offset + 1)

    def react_batch(
        self, messages: Sequence[ConsumedMessage], dead_lettered: Collection[MessageKey] = ()
    ) -> Round:
        """One round of a batch, in one transaction (blocking: run it in a thread).

        ``dead_lettered``: messages whose dead letters were sent; they are recorded as
        handled, with no effect.
        """
        todo = self._not_handled(messages)
        commands: list[Callable[[], object] | None] = []
        unreadable: list[tuple[ConsumedMessage, Reason]] = []
        for message in todo:
            command = self._command(message, dead_lettered)
            if isinstance(command, Reason):
                unreadable.append((message, command))
            else:
                commands.append(command)
        if unreadable:  # their dead letters first: then the batch runs without them
            return Round(dead_letters=unreadable, again=todo)
        settled = self.app.group_commit.run_in_order(
            commands, [self.tracking(message) for message in todo]
        )
        result = Round()
        for message, outcome in zip(todo, settled, strict=True):
            tracking = self.tracking(message)
            name = tracking.application_name
            if outcome.done:
                self._positions[name] = max(self._positions.get(name, 0), tracking.notification_id)
                if isinstance(outcome.value, SagaEnded):
                    outcome.value.record()
                continue
            result.again.append(message)
            error = outcome.error
            if isinstance(error, _DeadLetter):
                result.dead_letters.append((message, error.reason))
            elif error is None:
                pass  # it read what a failed one staged: run it again
            elif isinstance(error, IntegrityError):  # a conflict; maybe handled by another
                self._positions.pop(name, None)
            elif isinstance(error, TRANSIENT_ERRORS):
                result.error = result.error or error
            else:  # a bug outside the reaction (its own errors are caught): the saga must end
                log.error("%s: message %s failed", self.consumer, key_of(message), exc_info=error)
                reason = Reason(
                    f"reaction failed: {type(error).__name__}: {error}", "reaction-failed"
                )
                result.dead_letters.append((message, reason))
        return result

    def react(self, message: ConsumedMessage) -> Reason | None:
        """Handle one message; return a reason if it must go to the dead-letter topic.

        When a reason is returned nothing was recorded: send the dead letter, then
        call :meth:`skip`.
        """
        for _ in range(MAX_ROUNDS):
            result = self.react_batch([message])
            if result.error is not None:
                raise result.error
            if result.dead_letters:
                return result.dead_letters[0][1]
            if not result.again:
                return None
        raise TimeoutError(f"{self.consumer}: {key_of(message)} kept conflicting")

    def skip(self, message: ConsumedMessage) -> None:
        """Record the message as handled without any effect."""
        result = self.react_batch([message], dead_lettered={key_of(message)})
        if result.error is not None:
            raise result.error

    def _not_handled(self, messages: Sequence[ConsumedMessage]) -> list[ConsumedMessage]:
        """The messages whose positions are not recorded yet."""
        recorded = self._positions
        todo = []
        for message in messages:
            tracking = self.tracking(message)
            name = tracking.application_name
            if name not in recorded:
                recorded[name] = self.app.recorder.max_tracking_id(name) or 0
            if tracking.notification_id > recorded[name]:
                todo.append(message)
        return todo

    def _command(
        self, message: ConsumedMessage, dead_lettered: Collection[MessageKey]
    ) -> Callable[[], object] | Reason | None:
        """What the message's turn runs (``None``: it is only to be recorded as handled),
        or why it cannot be read."""
        # The relays also put the type in a header (``ce_type``), so most messages of
        # types this service does not react to are skipped unread.
        if key_of(message) in dead_lettered or self.reader.skips(message.header("ce_type")):
            return None
        envelope = self.reader.envelope(message.value)
        if isinstance(envelope, Reason):
            return envelope
        event = self.reader.event(envelope)
        if event is None or isinstance(event, Reason):
            return event
        reaction = self.reactions[event.type()]

        def react() -> object:
            metadata = MessageMetadata(
                correlation_id=envelope.correlationid, causation_id=envelope.id
            )
            # The message's trace goes on: the events the command saves carry this span.
            span = tracing.message_span(
                f"{self.consumer} {envelope.type}",
                message.headers,
                tracing.message_attributes(
                    message.headers, message.topic, message.partition, message.offset
                ),
            )
            with tracing.current_span(span), caused_by(metadata):
                value = self._decide(reaction, event, envelope)
                if isinstance(value, SagaEnded):  # logged later, about this step
                    value = replace(value, fields={**value.fields, **context_fields()})
                return value

        return react

    def _decide(self, reaction: Reaction[App, Any], event: Any, envelope: Envelope) -> object:
        """Run the reaction's command, or, if it fails for good, the one recording the
        failure (what either returns). A command that raises has staged nothing (its
        save is its last step)."""
        try:
            return reaction.handle(self.app, event, envelope)
        except TRANSIENT_ERRORS:
            raise
        except Exception as error:  # permanent: the saga must still end
            reason = f"{type(error).__name__}: {error}"
            log.exception("%s: reaction to %s failed", self.consumer, envelope.type)
            if reaction.on_failure is None:
                raise _DeadLetter(Reason(f"reaction failed: {reason}", "reaction-failed")) from None
        try:
            return reaction.on_failure(self.app, event, envelope, reason)
        except TRANSIENT_ERRORS:
            raise
        except Exception as failure:
            log.exception("%s: on_failure for %s failed", self.consumer, envelope.type)
            raise _DeadLetter(
                Reason(
                    f"reaction failed: {reason}; "
                    f"on_failure failed: {type(failure).__name__}: {failure}",
                    "reaction-failed",
                )
            ) from None
