"""Saga reactions: another service's event → a local command, exactly once in effect.

Each consumed message is handled in one local transaction that saves the new events
together with the message's position (topic, partition, offset) as an eventsourcing
``Tracking`` record: the inbox. A re-delivered message is found in the inbox and
skipped; a re-published copy (same event at a new offset) meets aggregates whose ids
derive from the order, so handlers see the work is done and save nothing new.

- Unreadable messages (bad bytes, unknown types, contract violations) go to the
  dead-letter topic; known event types the service does not react to are skipped.
- Infrastructure errors propagate, and the worker retries the message.
- A concurrency conflict reloads and decides again.
- Any other error is permanent: the reaction's ``on_failure`` turns it into the
  step's failure event, so the saga still ends; without one (or if it fails too),
  the message is dead-lettered with the error.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking

from contracts.base import ContractEvent
from contracts.envelope import Envelope
from contracts.registry import (
    ContractError,
    decode_envelope,
    is_known_type,
    parse_data,
    readable_types,
)
from write_side.kernel.application import ServiceApplication
from write_side.kernel.messaging import ConsumedMessage, Reason
from write_side.kernel.metadata import MessageMetadata, caused_by
from write_side.kernel.streams import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

Handler = Callable[[Any, Envelope], Sequence[Any]]
"""Takes the contract event and its envelope; returns the aggregates to save."""

FailureHandler = Callable[[Any, Envelope, str], Sequence[Any]]
"""Takes the event, its envelope and the error; returns aggregates holding the failure."""

MAX_CONFLICT_RETRIES = 20


@dataclass(frozen=True)
class Reaction:
    event: type[ContractEvent]
    handle: Handler
    on_failure: FailureHandler | None = None


class Reactor:
    """Runs one service's reactions on the messages its saga worker consumes."""

    def __init__(self, app: ServiceApplication, consumer: str, reactions: Sequence[Reaction]):
        self.app = app
        self.consumer = consumer
        self.reactions = {reaction.event.type(): reaction for reaction in reactions}
        self.accepts = tuple(reaction.event for reaction in reactions)
        self.readable = readable_types(self.accepts)  # with older majors, upcast

    def tracking(self, message: ConsumedMessage) -> Tracking:
        # Kafka's convention: the position to record is the next offset to read.
        return Tracking(f"{self.consumer}:{message.topic}:{message.partition}", message.offset + 1)

    def react(self, message: ConsumedMessage) -> Reason | None:
        """Handle one message; return a reason if it must go to the dead-letter topic.

        When a reason is returned nothing was recorded: send the dead letter, then
        call :meth:`skip`.
        """
        tracking = self.tracking(message)
        if self.app.has_processed(tracking):
            return None
        try:
            envelope = decode_envelope(message.value)
        except ContractError as error:
            return Reason.of(error)
        if envelope.type not in self.readable and is_known_type(envelope.type):
            self.skip(message)  # a known event this service does not react to
            return None
        try:
            event = parse_data(envelope, self.accepts)
        except ContractError as error:
            return Reason.of(error)
        reaction = self.reactions[event.type()]
        with caused_by(
            MessageMetadata(correlation_id=envelope.correlationid, causation_id=envelope.id)
        ):
            return self._react(reaction, event, envelope, tracking)

    def skip(self, message: ConsumedMessage) -> None:
        """Record the message as handled without any effect."""
        tracking = self.tracking(message)
        try:
            self.app.save_processed(tracking)
        except IntegrityError:
            pass  # already recorded

    def _react(
        self, reaction: Reaction, event: Any, envelope: Envelope, tracking: Tracking
    ) -> Reason | None:
        for _ in range(MAX_CONFLICT_RETRIES):
            if self.app.has_processed(tracking):
                return None
            try:
                aggregates = reaction.handle(event, envelope)
            except TRANSIENT_ERRORS:
                raise
            except Exception as error:  # permanent: the saga must still end
                reason = f"{type(error).__name__}: {error}"
                log.exception("%s: reaction to %s failed", self.consumer, envelope.type)
                if reaction.on_failure is None:
                    return Reason(f"reaction failed: {reason}", "reaction-failed")
                try:
                    aggregates = reaction.on_failure(event, envelope, reason)
                except TRANSIENT_ERRORS:
                    raise
                except Exception as failure:
                    log.exception("%s: on_failure for %s failed", self.consumer, envelope.type)
                    return Reason(
                        f"reaction failed: {reason}; "
                        f"on_failure failed: {type(failure).__name__}: {failure}",
                        "reaction-failed",
                    )
            try:
                self.app.save_processed(tracking, *aggregates)
                return None
            except IntegrityError:
                continue  # a concurrent change, or a duplicate: decide again on fresh state
        # Retried later by the worker, like any other transient failure.
        raise TimeoutError(
            f"{self.consumer}: {envelope.type} {envelope.id} kept conflicting "
            f"{MAX_CONFLICT_RETRIES} times"
        )
