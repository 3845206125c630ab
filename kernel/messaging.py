"""Consumed messages and dead letters, shared by projections and saga reactions."""

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from aiokafka import AIOKafkaProducer

from contracts.base import ContractEvent
from contracts.envelope import Envelope
from contracts.registry import (
    ContractError,
    decode_envelope,
    is_known_type,
    parse_data,
    readable_types,
)
from kernel import metrics
from kernel.logs import message_fields

log = logging.getLogger(__name__)

DEAD_LETTER_HEADER_PREFIX = "dlq_"
"""Every header a dead letter adds starts with it; re-publishing removes them all."""

REASON_KINDS = (
    "malformed",
    "unknown-type",
    "unsupported-version",
    "unsupported-type",
    "schema-violation",
    "reaction-failed",
    "projection-failed",
)
"""The kinds of dead-letter reasons (``dlq_reason_kind``): the first five are the
kinds of ``contracts.registry.ContractError``; a reaction or a projection that raised
gives the last two."""


class Reason(str):
    """Why a message goes to the dead-letter topic (the ``dlq_reason`` text), and the
    kind of reason, for counting (``dlq_reason_kind``, one of ``REASON_KINDS``)."""

    kind: str

    def __new__(cls, text: str, kind: str) -> Self:
        reason = super().__new__(cls, text)
        reason.kind = kind
        return reason

    @classmethod
    def of(cls, error: ContractError) -> Self:
        return cls(str(error), error.kind)


class EventReader:
    """Reads the contract events one consumer (a projection, a saga worker) accepts,
    older majors included (upcast). A known event type it does not accept is skipped:
    another consumer's concern. What cannot be read is a Reason, for its dead letter."""

    def __init__(self, accepts: Sequence[type[ContractEvent]]):
        self.accepts = tuple(accepts)
        self.readable = readable_types(self.accepts)

    def skips(self, type_: str | None) -> bool:
        """A known event type this consumer does not read (None: not known yet)."""
        return type_ is not None and type_ not in self.readable and is_known_type(type_)

    def envelope(self, raw: bytes | None) -> Envelope | Reason:
        """The message's envelope, or why it cannot be decoded."""
        try:
            return decode_envelope(raw)
        except ContractError as error:
            return Reason.of(error)

    def event(self, envelope: Envelope) -> ContractEvent | Reason | None:
        """The envelope's event, why it cannot be read, or None: skipped."""
        if self.skips(envelope.type):
            return None
        try:
            return parse_data(envelope, self.accepts)
        except ContractError as error:
            return Reason.of(error)


@dataclass(frozen=True)
class ConsumedMessage:
    """One message as read from Kafka, before any decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, key: str) -> str | None:
        """A header's value as text (the first, if repeated); None if absent or not UTF-8."""
        for name, value in self.headers:
            if name == key:
                try:
                    return value.decode()
                except UnicodeDecodeError:
                    return None
        return None

    @classmethod
    def of(cls, event: Any) -> Self:
        """From a Faust stream event."""
        return cls.of_record(event.message)

    @classmethod
    def of_record(cls, record: Any) -> Self:
        """From an aiokafka ``ConsumerRecord`` (or a Faust message: the same fields)."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple((k, bytes(v)) for k, v in (record.headers or ())),
        )


DEAD_LETTER_SUFFIX = ".dead-letters"


def dead_letter_topic(topic: str) -> str:
    return f"{topic}{DEAD_LETTER_SUFFIX}"


class DeadLetters:
    """Sends rejected messages to ``<topic>.dead-letters``: original key, bytes and
    headers, plus ``dlq_*`` headers saying who rejected it, why, and where it was.

    ``counts`` holds this process's dead letters per (source topic, reason kind);
    each one is logged with the running total. The topics hold the durable count
    (``cqrs dead-letters stats``).
    """

    def __init__(self, producer: AIOKafkaProducer, consumer: str):
        self.producer = producer
        self.consumer = consumer
        self.counts: Counter[tuple[str, str]] = Counter()

    async def send(self, rejected: list[tuple[ConsumedMessage, Reason]]) -> None:
        acks = []
        for message, reason in rejected:
            headers = [
                *message.headers,
                ("dlq_reason", reason.encode()),
                ("dlq_reason_kind", reason.kind.encode()),
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
        for message, reason in rejected:
            self.counts[(message.topic, reason.kind)] += 1
            metrics.dead_letter(self.consumer, message.topic, reason.kind)
            log.warning(
                "%s dead-lettered %s[%d]@%d (%s): %s; dead letters so far: %s",
                self.consumer,
                message.topic,
                message.partition,
                message.offset,
                reason.kind,
                reason,
                self.summary(),
                extra={"dead_letter_reason_kind": reason.kind, **message_fields(message.headers)},
            )

    def summary(self) -> str:
        """``orders/malformed=2, orders/unknown-type=1``: this process's counts."""
        return ", ".join(f"{topic}/{kind}={n}" for (topic, kind), n in sorted(self.counts.items()))
