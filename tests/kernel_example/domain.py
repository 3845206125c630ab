"""The Tally aggregate: a named count of something that only grows, until it is closed."""

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from kernel.errors import DomainError

NAMESPACE = UUID("5b0f6a57-2f4e-4d0c-9a51-7f8e3c1d2b64")


class Tally(Aggregate):
    """Its id derives from its name: starting a name twice collides in the store."""

    class Started(Aggregate.Created):
        name: str
        unit: str

    class Added(Aggregate.Event):
        amount: int

    class Closed(Aggregate.Event):
        reason: str

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE, name)

    @event(Started)
    def __init__(self, name: str, unit: str = "items") -> None:
        self.name = name
        self.unit = unit
        self.total = 0
        self.closed_because: str | None = None

    def add(self, amount: int) -> None:
        if self.closed_because is not None:
            raise DomainError(f"tally {self.name} is closed")
        if amount <= 0:
            raise DomainError("a tally only grows")
        self._added(amount)

    def close(self, reason: str) -> None:
        if self.closed_because is not None:
            raise DomainError(f"tally {self.name} is already closed")
        self._closed(reason)

    @event(Added)
    def _added(self, amount: int) -> None:
        self.total += amount

    @event(Closed)
    def _closed(self, reason: str) -> None:
        self.closed_because = reason
