"""Correlation and causation ids that travel with the events a command causes, who
caused them (the actor: the token's subject and roles of an HTTP command; none for a
saga reaction), and the W3C trace context of the span that saved them (the store adds
it when the event is encoded: ``kernel.tracing``).

The command API sets them for a whole request (``kernel.api.CommandRoute``), a saga
reaction for one message's command (``caused_by``); the
store's mapper writes them next to each event, and the relay puts them on the wire.
Domain code never sees them.
"""

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MessageMetadata:
    correlation_id: str
    causation_id: str
    actor: str | None = None
    """The subject of the token of the HTTP command that caused the events."""
    actor_roles: tuple[str, ...] = ()
    """That token's roles."""
    traceparent: str | None = None
    """The W3C trace context of the span that saved the event (``kernel.tracing``)."""
    tracestate: str | None = None

    @classmethod
    def new(cls) -> "MessageMetadata":
        command_id = str(uuid.uuid4())
        return cls(correlation_id=command_id, causation_id=command_id)

    def stored(self) -> dict[str, Any]:
        """As stored beside each event: without an actor when there is none."""
        stored: dict[str, Any] = {
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        }
        if self.actor is not None:
            stored["actor"] = self.actor
            stored["actor_roles"] = list(self.actor_roles)
        if self.traceparent is not None:
            stored["traceparent"] = self.traceparent
            if self.tracestate:
                stored["tracestate"] = self.tracestate
        return stored

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> "MessageMetadata":
        """The inverse of `stored`; events stored before actors were recorded have none."""
        return cls(
            correlation_id=stored["correlation_id"],
            causation_id=stored["causation_id"],
            actor=stored.get("actor"),
            actor_roles=tuple(stored.get("actor_roles", ())),
            traceparent=stored.get("traceparent"),
            tracestate=stored.get("tracestate"),
        )


_current: ContextVar[MessageMetadata | None] = ContextVar("message_metadata", default=None)


def current_metadata() -> MessageMetadata | None:
    return _current.get()


def set_for_this_context(metadata: MessageMetadata) -> None:
    """Set ``metadata`` for the rest of the current context: an HTTP request's (each
    runs in a context of its own, which ends with it)."""
    _current.set(metadata)


@contextmanager
def caused_by(metadata: MessageMetadata) -> Iterator[MessageMetadata]:
    token = _current.set(metadata)
    try:
        yield metadata
    finally:
        _current.reset(token)
