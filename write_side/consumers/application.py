"""The consumers Application: commands are get → mutate → save; ``verify`` decides only.

``verify`` and ``fail_verification`` return the aggregate to save and save nothing:
the saga's Reactor saves it together with the consumed message's position.
"""

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from kernel.application import ServiceApplication
from kernel.errors import DomainError, NotFound
from kernel.group_commit import command
from write_side.consumers.domain import Consumer, Verification


class ConsumersApplication(ServiceApplication):
    name = "consumers"  # table names: consumers_events, consumers_tracking

    @command
    def register_consumer(self, consumer_id: str, name: str) -> Consumer:
        if Consumer.create_id(consumer_id) in self.repository:
            raise DomainError(f"consumer {consumer_id} is already registered")
        consumer = Consumer(consumer_id=consumer_id, name=name)
        self.save(consumer)
        return consumer

    @command
    def deactivate_consumer(self, consumer_id: str, reason: str) -> Consumer:
        consumer = self.get_consumer(consumer_id)
        consumer.deactivate(reason)
        self.save(consumer)
        return consumer

    @command
    def reactivate_consumer(self, consumer_id: str) -> Consumer:
        consumer = self.get_consumer(consumer_id)
        consumer.reactivate()
        self.save(consumer)
        return consumer

    def get_consumer(self, consumer_id: str) -> Consumer:
        try:
            consumer: Consumer = self.repository.get(Consumer.create_id(consumer_id))
        except AggregateNotFoundError:
            raise NotFound(f"consumer {consumer_id} not found") from None
        return consumer

    def verify(
        self,
        order_id: str,
        consumer_id: str,
        restaurant_id: str,
        line_items: list[dict[str, Any]],
        total_cents: int,
    ) -> Verification | None:
        """May this consumer place this order? None if the order was verified already."""
        if self._verified_already(order_id):
            return None
        try:
            consumer = self.get_consumer(consumer_id)
        except NotFound:
            return Verification.failed(
                order_id, consumer_id, f"consumer {consumer_id} is not registered"
            )
        if not consumer.may_order():
            return Verification.failed(
                order_id,
                consumer_id,
                f"consumer {consumer_id} is deactivated: {consumer.deactivation_reason}",
            )
        return Verification.succeeded(order_id, consumer_id, restaurant_id, line_items, total_cents)

    def fail_verification(
        self, order_id: str, consumer_id: str, reason: str
    ) -> Verification | None:
        """The order's verification failed for ``reason``; None if already decided."""
        if self._verified_already(order_id):
            return None
        return Verification.failed(order_id, consumer_id, reason)

    def get_verification(self, order_id: str) -> Verification:
        try:
            verification: Verification = self.repository.get(UUID(order_id))
        except AggregateNotFoundError:
            raise NotFound(f"no verification of order {order_id}") from None
        return verification

    def _verified_already(self, order_id: str) -> bool:
        return Verification.create_id(order_id) in self.repository
