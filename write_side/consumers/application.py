"""The consumers Application: each command is get → mutate → save, nothing else.

``verify`` and ``fail_verification`` are the saga's commands: called by a reaction, their
save joins the batch that records the consumed message's position (kernel.reactions).
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

    @command
    def verify(
        self,
        order_id: str,
        consumer_id: str,
        restaurant_id: str,
        line_items: list[dict[str, Any]],
        total_cents: int,
    ) -> None:
        """May this consumer place this order? Saves the Verification (verified, or
        failed with the reason); nothing if the order was verified already."""
        if self._verified_already(order_id):
            return
        try:
            consumer = self.get_consumer(consumer_id)
        except NotFound:
            verification = Verification.failed(
                order_id, consumer_id, f"consumer {consumer_id} is not registered"
            )
        else:
            if consumer.may_order():
                verification = Verification.succeeded(
                    order_id, consumer_id, restaurant_id, line_items, total_cents
                )
            else:
                reason = f"consumer {consumer_id} is deactivated: {consumer.deactivation_reason}"
                verification = Verification.failed(order_id, consumer_id, reason)
        self.save(verification)

    @command
    def fail_verification(self, order_id: str, consumer_id: str, reason: str) -> None:
        """Save the order's verification as failed for ``reason``; nothing if decided."""
        if self._verified_already(order_id):
            return
        self.save(Verification.failed(order_id, consumer_id, reason))

    def get_verification(self, order_id: str) -> Verification:
        try:
            verification: Verification = self.repository.get(UUID(order_id))
        except AggregateNotFoundError:
            raise NotFound(f"no verification of order {order_id}") from None
        return verification

    def _verified_already(self, order_id: str) -> bool:
        return Verification.create_id(order_id) in self.repository
