"""What a projection is: a name, the contracts it accepts, and a pure apply function."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo import IndexModel

from contracts.base import ContractEvent
from contracts.envelope import Envelope

Document = dict[str, Any]


class ProjectionError(ValueError):
    """An event the projection cannot apply (it goes to the dead-letter topic)."""


@dataclass(frozen=True)
class Projection:
    """A read model kept by one pure function.

    ``apply(document, envelope, event)`` returns the new document for the event's
    aggregate; ``document`` is None for an aggregate not seen yet. It must not mutate
    its input. The runtime adds the bookkeeping fields ``version``, ``position`` and
    ``updated_at`` and applies an event only if it is newer than the document.
    """

    name: str
    topic: str
    collection: str
    accepts: tuple[type[ContractEvent], ...]
    apply: Callable[[Document | None, Envelope, Any], Document]
    indexes: list[IndexModel] = field(default_factory=list)
