"""Dead letters: read them, count them, and re-publish them to where they came from.

A dead letter (``kernel.messaging.DeadLetters``) is the rejected message's
key, bytes and headers plus ``dlq_*`` headers: who rejected it, why, and where it
was. Its id is where it sits: ``<dead-letter topic>:<partition>:<offset>``, e.g.
``orders.dead-letters:0:12``.

Re-publishing sends the original key, bytes and headers (the ``dlq_*`` ones removed,
``dlq_republished_from`` added) back to the original topic and partition, waits for
the ack, then records it in ``<dead-letter topic>.republished`` (ADR 12). Every
consumer of the topic reads the copy again, which their idempotence makes safe.

Reading never joins a consumer group: partitions are assigned by hand and read from
their beginning to the end offsets they had when the reading started.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Self

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from kernel.messaging import (
    DEAD_LETTER_HEADER_PREFIX,
    DEAD_LETTER_SUFFIX,
    ConsumedMessage,
    dead_letter_topic,
)

log = logging.getLogger(__name__)

REPUBLISHED_SUFFIX = ".republished"
PROVENANCE_HEADER = "dlq_republished_from"
"""On a re-published copy: the id of the dead letter it was made from."""

Headers = tuple[tuple[str, bytes], ...]


class DeadLetterError(Exception):
    """Bad input (an id that names no dead letter, a second re-publish): nothing was sent."""


def records_topic(topic: str) -> str:
    """Where the re-publications of the dead letters of ``topic`` (a dead-letter topic)
    are recorded."""
    return f"{topic}{REPUBLISHED_SUFFIX}"


def parse_id(text: str) -> tuple[str, int, int]:
    """``orders.dead-letters:0:12`` → ``("orders.dead-letters", 0, 12)``."""
    topic, _, offset = text.rpartition(":")
    topic, _, partition = topic.rpartition(":")
    if not topic.endswith(DEAD_LETTER_SUFFIX) or not partition.isdigit() or not offset.isdigit():
        raise DeadLetterError(
            f"{text!r} is not a dead letter id: "
            f"expected <topic>{DEAD_LETTER_SUFFIX}:<partition>:<offset>, "
            f"e.g. orders{DEAD_LETTER_SUFFIX}:0:12"
        )
    return topic, int(partition), int(offset)


def safe_text(raw: bytes) -> str:
    """Printable UTF-8 as it is; anything else with escapes (no control bytes reach the
    terminal)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return repr(raw)
    return text if text.isprintable() else repr(raw)


@dataclass(frozen=True)
class DeadLetter(ConsumedMessage):
    """One record of a dead-letter topic."""

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        for header, value in self.headers:
            if header == name:
                return value.decode(errors="replace")
        return None

    @property
    def original_topic(self) -> str:
        return self.header("dlq_topic") or self.topic.removesuffix(DEAD_LETTER_SUFFIX)

    @property
    def original_partition(self) -> int | None:
        partition = self.header("dlq_partition")
        return int(partition) if partition is not None and partition.isdigit() else None

    @property
    def origin(self) -> str:
        """Where the rejected message was: ``orders[0]@5``."""
        return f"{self.original_topic}[{self.header('dlq_partition')}]@{self.header('dlq_offset')}"

    @property
    def consumer(self) -> str:
        return self.header("dlq_consumer") or "?"

    @property
    def reason(self) -> str:
        return self.header("dlq_reason") or ""

    @property
    def kind(self) -> str:
        """The reason's kind, as recorded (``other`` for a letter without one)."""
        return self.header("dlq_reason_kind") or "other"

    @property
    def original_headers(self) -> Headers:
        return tuple(h for h in self.headers if not h[0].startswith(DEAD_LETTER_HEADER_PREFIX))


@dataclass(frozen=True)
class Filter:
    """Which dead letters: by original topic, consumer, a piece of the reason."""

    topic: str | None = None
    consumer: str | None = None
    reason_contains: str | None = None

    def topics(self, existing: Iterable[str]) -> list[str]:
        """The dead-letter topics to read."""
        dead = sorted(t for t in existing if t.endswith(DEAD_LETTER_SUFFIX))
        if self.topic is None:
            return dead
        wanted = (
            self.topic if self.topic.endswith(DEAD_LETTER_SUFFIX) else dead_letter_topic(self.topic)
        )
        return [t for t in dead if t == wanted]

    def __call__(self, letter: DeadLetter) -> bool:
        return (self.consumer is None or letter.consumer == self.consumer) and (
            self.reason_contains is None or self.reason_contains in letter.reason
        )


@dataclass(frozen=True)
class Republication:
    """A record of ``<dead-letter topic>.republished``: one dead letter sent back."""

    dead_letter: str
    origin: str
    republished_as: str
    at: str
    by: str

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Republication:
        """Fields added by a later version are ignored."""
        data = json.loads(raw)
        return cls(**{field.name: str(data[field.name]) for field in fields(cls)})


@dataclass(frozen=True)
class Planned:
    """What re-publishing a dead letter sends."""

    letter: DeadLetter
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def plan(letter: DeadLetter) -> Planned:
    """The original message, back where it was, naming the dead letter it comes from."""
    partition = letter.original_partition
    if letter.header("dlq_topic") is None or partition is None:
        raise DeadLetterError(f"{letter.id} has no dlq_topic/dlq_partition: not a dead letter")
    headers = (*letter.original_headers, (PROVENANCE_HEADER, letter.id.encode()))
    return Planned(letter, letter.original_topic, partition, letter.key, letter.value, headers)


class DeadLetterTopics:
    """The broker's dead-letter topics, read without a consumer group.

    Partitions come from the admin client: a consumer's own metadata only covers the
    partitions assigned to it last.
    """

    def __init__(self, bootstrap: str, timeout: float = 30.0):
        self.timeout = timeout
        self.admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="cqrs-dead-letters",
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=int(timeout * 1000),
        )

    async def __aenter__(self) -> Self:
        async with asyncio.timeout(self.timeout):
            await self.admin.start()
        async with asyncio.timeout(self.timeout):
            await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        """Every partition of those of ``topics`` that exist."""
        existing = set(await self.admin.list_topics())
        present = sorted(topic for topic in topics if topic in existing)
        described = await self.admin.describe_topics(present) if present else []
        return [
            TopicPartition(info["topic"], partition["partition"])
            for info in described
            for partition in sorted(info["partitions"], key=lambda p: p["partition"])
        ]

    async def letters(self, which: Filter | None = None) -> list[DeadLetter]:
        which = which or Filter()
        topics = which.topics(await self.admin.list_topics())
        records = await self._read_to_end(await self.partitions(topics))
        return [letter for letter in map(DeadLetter.of_record, records) if which(letter)]

    async def fetch(self, dead_letter_id: str) -> DeadLetter:
        topic, partition, offset = parse_id(dead_letter_id)
        tp = TopicPartition(topic, partition)
        if tp not in await self.partitions([topic]):
            raise DeadLetterError(f"no dead letter {dead_letter_id}: no such topic or partition")
        self.consumer.assign([tp])
        first = (await self.consumer.beginning_offsets([tp]))[tp]
        end = (await self.consumer.end_offsets([tp]))[tp]
        if not first <= offset < end:
            raise DeadLetterError(
                f"no dead letter {dead_letter_id} "
                f"({topic}[{partition}] holds offsets {first} to {end - 1})"
            )
        self.consumer.seek(tp, offset)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for record in (await self.consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if record.offset == offset:
                    return DeadLetter.of_record(record)
                if record.offset > offset:
                    raise DeadLetterError(f"no dead letter {dead_letter_id}")
        raise TimeoutError(f"{dead_letter_id}: not read within {self.timeout:g} s")

    async def republications(
        self, dead_letter_topics: Iterable[str]
    ) -> dict[str, list[Republication]]:
        """Origin (``orders[0]@5``) → its re-publications, oldest first."""
        partitions = await self.partitions(records_topic(t) for t in dead_letter_topics)
        found: dict[str, list[Republication]] = defaultdict(list)
        for record in await self._read_to_end(partitions):
            try:
                republication = Republication.from_bytes(record.value or b"")
            except (ValueError, TypeError, KeyError) as error:
                where = f"{record.topic}[{record.partition}]@{record.offset}"
                log.warning("skipping %s, not a re-publication record: %r", where, error)
                continue
            found[republication.origin].append(republication)
        return found

    async def _read_to_end(
        self, partitions: Sequence[TopicPartition]
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of ``partitions`` below the end offsets they have now."""
        if not partitions:
            return []
        self.consumer.assign(list(partitions))
        await self.consumer.seek_to_beginning(*partitions)
        ends = await self.consumer.end_offsets(list(partitions))
        pending = {tp for tp in partitions if await self.consumer.position(tp) < ends[tp]}
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + self.timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sorted(pending)} not read to the end in {self.timeout:g} s")
            batch = await self.consumer.getmany(*pending, timeout_ms=500)
            for tp, tp_records in batch.items():
                records.extend(r for r in tp_records if r.offset < ends[tp])
            for tp in list(pending):
                if await self.consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return records


async def republish(bootstrap: str, plans: Sequence[Planned]) -> list[Republication]:
    """Send each planned message and wait for its ack, then record it (ADR 12).

    A crash between the two leaves a sent copy unrecorded: re-publishing it again
    sends a second copy, which idempotent consumers ignore.
    """
    producer = reliable_producer(bootstrap)
    await producer.start()
    done = []
    try:
        await ensure_topics(bootstrap, {records_topic(p.letter.topic): 1 for p in plans})
        for planned in plans:
            sent = await producer.send_and_wait(
                planned.topic,
                value=planned.value,
                key=planned.key,
                partition=planned.partition,
                headers=list(planned.headers),
            )
            republication = Republication(
                dead_letter=planned.letter.id,
                origin=planned.letter.origin,
                republished_as=f"{sent.topic}[{sent.partition}]@{sent.offset}",
                at=datetime.now(UTC).isoformat(),
                by=_operator(),
            )
            await producer.send_and_wait(
                records_topic(planned.letter.topic),
                value=republication.to_bytes(),
                key=planned.letter.origin.encode(),
            )
            done.append(republication)
    finally:
        await stop_producer(producer)
    return done


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def counts(
    letters: Iterable[DeadLetter], republished: Mapping[str, object]
) -> dict[tuple[str, str], tuple[int, int]]:
    """(consumer, reason kind) → (dead letters, of which re-published)."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for letter in letters:
        entry = totals[(letter.consumer, letter.kind)]
        entry[0] += 1
        entry[1] += letter.origin in republished
    return {key: (n, r) for key, (n, r) in sorted(totals.items())}
