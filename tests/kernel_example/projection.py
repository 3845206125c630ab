"""The ``tallies`` read model: one document per tally, for the kernel's projection, replay,
dead-letter and read-model tests. Build its runner with the tallies' contracts
registered (``contracts.registered()``): the runner reads the accepted types then.

An addition or a closing before the tally's start is refused (a ``ProjectionError``:
a ``projection-failed`` dead letter), as a read model that needs its aggregate's first
event does.
"""

from pymongo import ASCENDING, DESCENDING, IndexModel

from contracts.envelope import Envelope
from kernel.projection import Document, Projection, ProjectionError
from tests.kernel_example import contracts as contract


def apply(document: Document | None, envelope: Envelope, event: object) -> Document:
    if isinstance(event, contract.TallyStarted):
        new: Document = {
            "name": event.tally_name,
            "unit": event.unit,
            "total": 0,
            "closed": False,
            "reason": None,
        }
    elif document is None:
        raise ProjectionError(f"{envelope.type} for tally {envelope.subject} never started")
    elif isinstance(event, contract.TallyAdded):
        new = {**document, "total": document["total"] + event.amount}
    elif isinstance(event, contract.TallyClosed):
        new = {**document, "closed": True, "reason": event.reason}
    else:
        new = dict(document)
    new.update(version=envelope.aggregateversion, position=envelope.sequence)
    return new


TALLIES = Projection(
    name="tallies",
    topics=(contract.TOPIC,),
    collection="tallies",
    accepts=contract.EVENTS,
    apply=apply,
    indexes=[IndexModel([("closed", ASCENDING), ("total", DESCENDING)])],
)
