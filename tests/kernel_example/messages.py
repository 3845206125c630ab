"""The tallies' messages as the relay publishes them, built without a store or a relay:
for the tests that feed a projection runner directly."""

import uuid
from datetime import UTC, datetime

from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from kernel.messaging import ConsumedMessage
from tests.kernel_example import contracts as contract

SOURCE = "tallies"


def envelope(event: ContractEvent, tally_id: str, version: int, position: int) -> Envelope:
    return Envelope(
        id=event_id_for(SOURCE, tally_id, version),
        type=event.type(),
        source=SOURCE,
        subject=tally_id,
        time=datetime.now(UTC),
        correlationid="c",
        causationid="c",
        sequence=position,
        aggregateversion=version,
        data=event.model_dump(mode="json"),
    )


class TallyLog:
    """Messages of the ``tallies`` topic, with increasing log positions and offsets."""

    def __init__(self, partition: int = 0) -> None:
        self.partition = partition
        self.position = 0
        self.offset = 0
        self.versions: dict[str, int] = {}

    def message(self, event: ContractEvent, tally_id: str) -> ConsumedMessage:
        """The aggregate's next event (its version counted per tally)."""
        self.position += 1
        version = self.versions[tally_id] = self.versions.get(tally_id, 0) + 1
        raw = envelope(event, tally_id, version, self.position).to_bytes()
        return self.raw(raw, key=tally_id.encode())

    def raw(self, value: bytes | None, key: bytes | None = b"k") -> ConsumedMessage:
        """Any bytes at the next offset (a poison message, say)."""
        self.offset += 1
        return ConsumedMessage(
            contract.TOPIC, self.partition, self.offset, key, value, (("ce_id", b"x"),)
        )

    def started(self, tally_id: str | None = None, name: str = "apples") -> ConsumedMessage:
        tally_id = tally_id or str(uuid.uuid4())
        event = contract.TallyStarted(tally_id=tally_id, tally_name=name, unit="items")
        return self.message(event, tally_id)

    def added(self, tally_id: str, amount: int) -> ConsumedMessage:
        return self.message(contract.TallyAdded(tally_id=tally_id, amount=amount), tally_id)

    def closed(self, tally_id: str, reason: str = "counted") -> ConsumedMessage:
        return self.message(contract.TallyClosed(tally_id=tally_id, reason=reason), tally_id)


def tally_id_of(message: ConsumedMessage) -> str:
    return Envelope.from_bytes(message.value or b"").subject
