"""What a projection is: a name, the contracts it reads, and a pure apply function."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo import IndexModel

from contracts.base import ContractEvent
from contracts.envelope import Envelope

Document = dict[str, Any]


class ProjectionError(ValueError):
    """An event the projection cannot apply (it goes to the dead-letter topic)."""


def by_subject(envelope: Envelope, _: Any) -> str:
    """The document of the event's own aggregate."""
    return envelope.subject


@dataclass(frozen=True)
class Projection:
    """A read model kept by one pure function.

    ``apply(document, envelope, event)`` returns the new document; ``document`` is
    None when the key has no document yet. It must not mutate its input. ``key``
    names the document an event belongs to (by default the event's aggregate).

    The runtime applies an event only if it is newer than the last one applied from
    the same source aggregate (the version guard), so a re-delivered or older event
    changes nothing, whatever the topic it comes from.

    ``version`` names the logic: bump it whenever ``apply`` would build different
    documents from the same events. The worker refuses to write into a collection
    built by another version (``cqrs replay NAME`` builds a new one); see ADR 13.
    ``collection`` is the name of the first collection (deployments from before
    versioning), later builds are named ``<name>_v<version>_<build>``.
    """

    name: str
    topics: tuple[str, ...]
    collection: str
    accepts: tuple[type[ContractEvent], ...]
    apply: Callable[[Document | None, Envelope, Any], Document]
    key: Callable[[Envelope, Any], str] = by_subject
    indexes: list[IndexModel] = field(default_factory=list)
    version: int = 1
