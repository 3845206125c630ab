"""`cqrs dead-letters` on the kernel's own tallies topic (tests/kernel_example): list,
show, stats and republish the dead letters of two consumers, a real broker of this
module's own, and the session's MongoDB-wire server.

Two read models of the tallies (``projections.tallies`` and ``projections.tally_names``)
are fed the topic by their projection runners, as the projections worker would; each
dead-letters every poison message with its reason's kind. "After a fix" comes in two
shapes: a message refused by the consumers' *code* comes back, re-published to
unchanged consumers, as a new dead letter with its provenance; one that lacked *data*
(an addition to a tally not started yet) is consumed once the data is there.

The saga's workers as processes dead-lettering each kind and going on:
tests/integration/test_dead_letters.py.
"""

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import Envelope
from devstack.cli import main
from devstack.servers import KafkaBroker
from kernel.dead_letters import (
    PROVENANCE_HEADER,
    DeadLetter,
    DeadLetterTopics,
    Filter,
    records_topic,
)
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from kernel.messaging import ConsumedMessage, DeadLetters, dead_letter_topic
from kernel.projection_runtime import ProjectionRunner
from tests.integration.kafka_reading import read_all
from tests.kernel_example import contracts as contract
from tests.kernel_example.contracts import TOPIC, registered
from tests.kernel_example.messages import envelope
from tests.kernel_example.projection import TALLIES

CONSUMERS = ("projections.tallies", "projections.tally_names")
POISON_KINDS = ("malformed", "unknown-type", "unsupported-version", "schema-violation")
DEAD_LETTERS = dead_letter_topic(TOPIC)


@dataclass
class Stack:
    bootstrap: str
    database: AsyncDatabase[Any]
    producer: AIOKafkaProducer
    runners: list[ProjectionRunner]
    consumed: set[tuple[int, int]] = field(default_factory=set)

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
        code = main(["dead-letters", *argv, "--bootstrap", self.bootstrap])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    async def publish(self, key: str, *values: bytes | Envelope) -> None:
        """Publish in this order on one partition (one key), as a relay would."""
        for value in values:
            if isinstance(value, Envelope):
                raw, headers = value.to_bytes(), value.kafka_headers()
            else:
                raw, headers = value, [("ce_id", b"poison")]
            await self.producer.send_and_wait(TOPIC, raw, key=key.encode(), headers=headers)

    async def consume(self) -> None:
        """Hand every record of the topic not consumed yet to both consumers."""
        records = await read_all(self.bootstrap, TOPIC)
        fresh = [r for r in records if (r.partition, r.offset) not in self.consumed]
        fresh.sort(key=lambda r: (r.partition, r.offset))
        for runner in self.runners:
            await runner.handle([ConsumedMessage.of_record(r) for r in fresh])
        self.consumed |= {(r.partition, r.offset) for r in fresh}

    async def letters(self, which: Filter) -> list[DeadLetter]:
        async with DeadLetterTopics(self.bootstrap) as topics:
            return await topics.letters(which)


@pytest.fixture(scope="module")
def tally_contracts() -> Iterator[None]:
    with registered():
        yield


@pytest.fixture(scope="module")
async def stack(
    tally_contracts: None, tmp_path_factory: pytest.TempPathFactory, mongo_url: str
) -> AsyncIterator[Stack]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kernel-dead-letters") / "kafka").start()
    await ensure_topics(
        broker.bootstrap, {TOPIC: 2, DEAD_LETTERS: 1, records_topic(DEAD_LETTERS): 1}
    )
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url)
    database = client[f"kernel_dead_letters_{uuid.uuid4().hex[:8]}"]
    producer = reliable_producer(broker.bootstrap)
    await producer.start()
    names = dataclasses.replace(TALLIES, name="tally_names", collection="tally_names")
    runners = [
        ProjectionRunner(projection, database, DeadLetters(producer, consumer))
        for projection, consumer in zip((TALLIES, names), CONSUMERS, strict=True)
    ]
    try:
        yield Stack(broker.bootstrap, database, producer, runners)
    finally:
        await stop_producer(producer)
        await client.drop_database(database.name)
        await client.close()
        broker.stop()


@pytest.fixture(scope="module")
async def poisoned(stack: Stack) -> str:
    """One poison message of each kind on ``tallies``, then a good start: its tally."""
    good = str(uuid.uuid4())
    valid = envelope(contract.TallyStarted(tally_id=good, tally_name="g", unit="u"), good, 1, 1)
    poison = {
        "malformed": b"\x00garbage",
        "unknown-type": valid.model_copy(update={"type": "tallies.TallyShipped.v1"}),
        "unsupported-version": valid.model_copy(update={"type": "tallies.TallyStarted.v99"}),
        "schema-violation": valid.model_copy(
            update={"data": {k: v for k, v in valid.data.items() if k != "unit"}}
        ),
    }
    await stack.publish(good, *poison.values(), valid)
    await stack.consume()
    return good


async def test_each_consumer_dead_letters_each_poison_kind_and_goes_on(
    stack: Stack, poisoned: str
) -> None:
    letters = await stack.letters(Filter(topic=TOPIC))
    assert sorted((letter.consumer, letter.kind) for letter in letters) == sorted(
        (consumer, kind) for consumer in CONSUMERS for kind in POISON_KINDS
    )
    for letter in letters:
        assert letter.header("ce_id") is not None, "the original headers are kept"
        assert letter.original_topic == TOPIC and letter.reason
    for collection in ("tallies", "tally_names"):
        assert await stack.database[collection].find_one({"_id": poisoned}), collection
    for runner, consumer in zip(stack.runners, CONSUMERS, strict=True):
        assert runner.dead_letters is not None and runner.dead_letters.consumer == consumer
        assert sorted(runner.dead_letters.counts.items()) == [
            ((TOPIC, kind), 1) for kind in sorted(POISON_KINDS)
        ]


async def test_list_show_and_stats_show_them(
    stack: Stack, poisoned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = await stack.letters(Filter(topic=TOPIC))

    code, out = stack.cli(capsys, "list", "--topic", TOPIC, "--consumer", CONSUMERS[0])
    assert code == 0, out
    mine = [letter for letter in letters if letter.consumer == CONSUMERS[0]]
    for letter in mine:
        row = next(line for line in out.splitlines() if line.startswith(letter.id + " "))
        assert letter.origin in row and letter.kind in row
    assert CONSUMERS[1] not in out
    assert "tallies.TallyShipped.v1" in out, "the type column shows ce_type"

    code, out = stack.cli(capsys, "list", "--reason-contains", "TallyStarted.v99")
    assert code == 0 and out.count("unsupported-version") == 2, out

    malformed = next(letter for letter in mine if letter.kind == "malformed")
    code, out = stack.cli(capsys, "show", malformed.id)
    assert code == 0, out
    assert r"b'\x00garbage'" in out and "\x00" not in out, "bytes shown escaped"
    assert "dlq_reason: not a valid envelope" in out

    violation = next(letter for letter in mine if letter.kind == "schema-violation")
    code, out = stack.cli(capsys, "show", violation.id)
    assert code == 0 and "JSON" in out, out
    assert f'    "type": "{contract.TallyStarted.type()}",' in out, out

    code, out = stack.cli(capsys, "show", f"{DEAD_LETTERS}:0:999")
    assert code == 2 and f"no dead letter {DEAD_LETTERS}:0:999" in out

    code, out = stack.cli(capsys, "stats", "--topic", TOPIC)
    assert code == 0, out
    for consumer in CONSUMERS:
        for kind in POISON_KINDS:
            assert any(line.split()[:3] == [consumer, kind, "1"] for line in out.splitlines()), out
    assert ["total", "8", "0"] in [line.split() for line in out.splitlines()], out


async def test_republish_sends_the_original_back_once_and_dry_run_sends_nothing(
    stack: Stack, poisoned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = await stack.letters(Filter(topic=TOPIC))
    violations = [letter for letter in letters if letter.kind == "schema-violation"]
    assert len(violations) == 2 and violations[0].origin == violations[1].origin
    ids = [letter.id for letter in violations]
    before = await end_offsets(stack.bootstrap, TOPIC)

    code, out = stack.cli(capsys, "republish", *ids, "--dry-run")
    assert code == 0 and "dry run: 1 message(s), nothing sent" in out, out
    assert f"{PROVENANCE_HEADER}={ids[0]}" in out, "one copy for both consumers' letters"
    assert await end_offsets(stack.bootstrap, TOPIC) == before, "a dry run sends nothing"
    code, out = await asyncio.to_thread(stack.cli, capsys, "republish", *ids)
    assert code == 0, out
    assert f"{ids[1]} holds the same message as {ids[0]}" in out, out
    sent = re.search(rf"^re-published {ids[0]} as (\S+)$", out, re.MULTILINE)
    assert sent, out
    republished_as = sent[1]
    copy = await read_one(stack.bootstrap, TOPIC, republished_as)
    original = violations[0]
    assert (copy.key, copy.value) == (original.key, original.value)
    assert copy.partition == original.original_partition
    headers = tuple((name, bytes(value)) for name, value in copy.headers)
    assert headers == (*original.original_headers, (PROVENANCE_HEADER, ids[0].encode()))

    code, out = stack.cli(capsys, "list", "--topic", TOPIC)
    assert sum(f"as {republished_as}" in line for line in out.splitlines()) == 2, out
    after = await end_offsets(stack.bootstrap, TOPIC)
    code, out = stack.cli(capsys, "republish", ids[1])
    assert code == 2 and "re-published already" in out and "--again" in out, out
    code, out = stack.cli(capsys, "republish", "--all", "--topic", TOPIC, "--dry-run")
    assert code == 0 and "skipping 2 re-published already" in out, out
    assert await end_offsets(stack.bootstrap, TOPIC) == after, "nothing sent"

    # Unchanged consumers read the copy again and dead-letter it again, same reason.
    await stack.consume()
    returned = [
        letter
        for letter in await stack.letters(Filter(topic=TOPIC))
        if letter.origin == republished_as
    ]
    assert {(letter.consumer, letter.kind) for letter in returned} == {
        (consumer, "schema-violation") for consumer in CONSUMERS
    }
    assert all(letter.header(PROVENANCE_HEADER) == ids[0] for letter in returned)


async def test_a_dead_letter_republished_after_the_fix_is_consumed(
    stack: Stack, poisoned: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tally_id = str(uuid.uuid4())
    added = envelope(contract.TallyAdded(tally_id=tally_id, amount=4), tally_id, 2, 2)
    await stack.publish(tally_id, added)
    await stack.consume()
    which = Filter(topic=TOPIC, reason_contains=tally_id)
    dead = await stack.letters(which)
    assert {(letter.consumer, letter.kind) for letter in dead} == {
        (consumer, "projection-failed") for consumer in CONSUMERS
    }
    assert all("never started" in letter.reason for letter in dead)

    # The fix: the tally's start, which had not been published, is there now.
    started = contract.TallyStarted(tally_id=tally_id, tally_name="late", unit="u")
    await stack.publish(tally_id, envelope(started, tally_id, 1, 1))
    await stack.consume()
    assert await stack.database["tallies"].find_one({"_id": tally_id, "total": 0})

    code, out = await asyncio.to_thread(
        stack.cli, capsys, "republish", "--all", "--topic", TOPIC, "--reason-contains", tally_id
    )
    assert code == 0 and out.count(" as tallies[") == 1, out
    await stack.consume()
    for collection in ("tallies", "tally_names"):
        document = await stack.database[collection].find_one({"_id": tally_id})
        assert document is not None and document["total"] == 4, collection
    code, out = stack.cli(capsys, "stats", "--topic", TOPIC)
    for consumer in CONSUMERS:
        assert any(
            line.split() == [consumer, "projection-failed", "1", "1"] for line in out.splitlines()
        ), out


async def end_offsets(bootstrap: str, topic: str) -> list[int]:
    async with DeadLetterTopics(bootstrap) as topics:
        partitions = await topics.partitions([topic])
        ends = await topics.consumer.end_offsets(partitions)
    return [ends[tp] for tp in partitions]


async def read_one(bootstrap: str, topic: str, where: str) -> ConsumerRecord[bytes, bytes]:
    """The record at ``topic[partition]@offset``."""
    partition, offset = (int(n) for n in where.removeprefix(f"{topic}[").split("]@"))
    records = await read_all(bootstrap, topic)
    [record] = [r for r in records if (r.partition, r.offset) == (partition, offset)]
    return record
