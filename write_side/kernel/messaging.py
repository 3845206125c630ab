"""Consumed messages and dead letters, shared by projections and saga reactions."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer


@dataclass(frozen=True)
class ConsumedMessage:
    """One message as read from Kafka, before any decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, event: Any) -> "ConsumedMessage":
        """From a Faust stream event."""
        message = event.message
        return cls(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=tuple((k, bytes(v)) for k, v in (message.headers or ())),
        )


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dead-letters"


class DeadLetters:
    """Sends rejected messages to ``<topic>.dead-letters``: original key, bytes and
    headers, plus ``dlq_*`` headers saying who rejected it, why, and where it was."""

    def __init__(self, producer: AIOKafkaProducer, consumer: str):
        self.producer = producer
        self.consumer = consumer

    async def send(self, rejected: list[tuple[ConsumedMessage, str]]) -> None:
        acks = []
        for message, reason in rejected:
            headers = [
                *message.headers,
                ("dlq_reason", reason.encode()),
                ("dlq_consumer", self.consumer.encode()),
                ("dlq_topic", message.topic.encode()),
                ("dlq_partition", str(message.partition).encode()),
                ("dlq_offset", str(message.offset).encode()),
                ("dlq_time", datetime.now(UTC).isoformat().encode()),
            ]
            acks.append(
                await self.producer.send(
                    dead_letter_topic(message.topic),
                    value=message.value,
                    key=message.key,
                    headers=headers,
                )
            )
        for ack in acks:
            await ack
