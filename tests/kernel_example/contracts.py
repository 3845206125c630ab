"""The tallies' contract events, for the relay's tests (topic ``tallies``).

They are not in contracts/: the registry's services, the committed schemas, the AsyncAPI
document and ``cqrs contracts check`` never see them. The relay looks up downcasters in
the registry, so a test (or the tallies relay process) makes the registry know these
events, upcasters and downcasters only while it runs, with :func:`registered`.

``TallyStarted`` has two majors so the relay's transition setting can be tested: v1
carried the name and unit as one label, v2 carries them apart.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import Field

from contracts import registry
from contracts.base import ContractEvent, Conversion

TOPIC = "tallies"


class TallyStarted(ContractEvent, name="tallies.TallyStarted", version="2.0"):
    tally_id: str
    tally_name: str
    unit: str


class TallyStartedV1(ContractEvent, name="tallies.TallyStarted", version="1.0"):
    """Superseded by v2 (name and unit apart)."""

    tally_id: str
    label: str = Field(description="The name, then the unit in brackets.")


class TallyAdded(ContractEvent, name="tallies.TallyAdded", version="1.0"):
    tally_id: str
    amount: int = Field(gt=0)


class TallyClosed(ContractEvent, name="tallies.TallyClosed", version="1.0"):
    tally_id: str
    reason: str


def _started_v1_to_v2(old: TallyStartedV1) -> TallyStarted:
    # A label has no structure to recover: all of it becomes the name.
    return TallyStarted(tally_id=old.tally_id, tally_name=old.label, unit="items")


def _started_v2_to_v1(new: TallyStarted) -> TallyStartedV1:
    return TallyStartedV1(tally_id=new.tally_id, label=f"{new.tally_name} ({new.unit})")


EVENTS: tuple[type[ContractEvent], ...] = (TallyStarted, TallyAdded, TallyClosed)
SUPERSEDED: tuple[type[ContractEvent], ...] = (TallyStartedV1,)
UPCASTERS = (Conversion(TallyStartedV1, TallyStarted, _started_v1_to_v2),)
DOWNCASTERS = (Conversion(TallyStarted, TallyStartedV1, _started_v2_to_v1),)


@contextmanager
def registered() -> Iterator[None]:
    """Inside the block, the registry's lookups (``model_of``, ``parse_data``, ``editions``,
    ``check_also_publish``...) know the tallies' contracts; after it, they are as before.

    Only the lookup tables change: ``SERVICE_CONTRACTS`` and ``ALL_EVENTS``, from which
    the schemas, their check and the AsyncAPI document are made, stay as they are.
    """
    before = registry._MODELS, registry._UPCASTERS, registry._DOWNCASTERS
    registry._MODELS = {
        **registry._MODELS,
        **{model.type(): model for model in (*EVENTS, *SUPERSEDED)},
    }
    registry._UPCASTERS = {**registry._UPCASTERS, **{step.source: step for step in UPCASTERS}}
    registry._DOWNCASTERS = {
        **registry._DOWNCASTERS,
        **{step.source: step for step in DOWNCASTERS},
    }
    try:
        yield
    finally:
        registry._MODELS, registry._UPCASTERS, registry._DOWNCASTERS = before
