"""Correlation and causation ids that travel with the events a command causes.

The HTTP layer (or a saga reaction) sets them for the duration of one command; the
store's mapper writes them next to each event, and the relay puts them on the wire.
Domain code never sees them.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class MessageMetadata:
    correlation_id: str
    causation_id: str

    @classmethod
    def new(cls) -> "MessageMetadata":
        command_id = str(uuid.uuid4())
        return cls(correlation_id=command_id, causation_id=command_id)


_current: ContextVar[MessageMetadata | None] = ContextVar("message_metadata", default=None)


def current_metadata() -> MessageMetadata | None:
    return _current.get()


@contextmanager
def caused_by(metadata: MessageMetadata) -> Iterator[MessageMetadata]:
    token = _current.set(metadata)
    try:
        yield metadata
    finally:
        _current.reset(token)
