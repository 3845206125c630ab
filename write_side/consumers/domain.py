"""The Consumer and Verification aggregates. Plain Python: no infrastructure."""

from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from kernel.errors import DomainError

NAMESPACE = UUID("3860eb1c-5b8b-4693-870d-4bb47e298e33")
"""Consumer ids are derived from the consumer's own id ("cust-1"): one aggregate each."""


class Consumer(Aggregate):
    """Someone who may place orders, unless deactivated."""

    class Registered(Aggregate.Created):
        consumer_id: str
        name: str

    class Deactivated(Aggregate.Event):
        reason: str

    class Reactivated(Aggregate.Event):
        pass

    @staticmethod
    def create_id(consumer_id: str) -> UUID:
        return uuid5(NAMESPACE, consumer_id)

    @event(Registered)
    def __init__(self, consumer_id: str, name: str) -> None:
        if not consumer_id:
            raise DomainError("a consumer needs an id")
        if not name:
            raise DomainError("a consumer needs a name")
        self.consumer_id = consumer_id
        self.name = name
        self.active = True
        self.deactivation_reason: str | None = None

    def may_order(self) -> bool:
        return self.active

    def deactivate(self, reason: str) -> None:
        if not self.active:
            raise DomainError(f"consumer {self.consumer_id} is already deactivated")
        self._deactivated(reason)

    def reactivate(self) -> None:
        if self.active:
            raise DomainError(f"consumer {self.consumer_id} is already active")
        self._reactivated()

    @event(Deactivated)
    def _deactivated(self, reason: str) -> None:
        self.active = False
        self.deactivation_reason = reason

    @event(Reactivated)
    def _reactivated(self) -> None:
        self.active = True
        self.deactivation_reason = None


class Verification(Aggregate):
    """The consumers service's answer for one order; its id is the order's id.

    It is created once, verified or failed, and never changes: a second verification
    of the same order collides with the first on creation.
    Either creation event gives ``__init__`` the fields it names (eventsourcing does):
    a ``reason`` is what makes it failed.
    """

    class Verified(Aggregate.Created):
        order_id: str
        consumer_id: str
        restaurant_id: str
        line_items: list[dict[str, Any]]
        total_cents: int

    class Failed(Aggregate.Created):
        order_id: str
        consumer_id: str
        reason: str

    @staticmethod
    def create_id(order_id: str) -> UUID:
        return UUID(order_id)

    def __init__(self, order_id: str, consumer_id: str, reason: str | None = None) -> None:
        self.order_id = order_id
        self.consumer_id = consumer_id
        self.verified = reason is None
        self.reason = reason

    @classmethod
    def succeeded(
        cls,
        order_id: str,
        consumer_id: str,
        restaurant_id: str,
        line_items: list[dict[str, Any]],
        total_cents: int,
    ) -> "Verification":
        return cls._create(
            cls.Verified,
            order_id=order_id,
            consumer_id=consumer_id,
            restaurant_id=restaurant_id,
            line_items=line_items,
            total_cents=total_cents,
        )

    @classmethod
    def failed(cls, order_id: str, consumer_id: str, reason: str) -> "Verification":
        return cls._create(cls.Failed, order_id=order_id, consumer_id=consumer_id, reason=reason)
