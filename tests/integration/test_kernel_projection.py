"""The projection runtime on the kernel's own tallies read model (tests/kernel_example),
against a real MongoDB-wire server and a real broker: batches, the version guard,
write conflicts, progress, dead letters with their reason, and the projection versions
behind the alias. A project without the reference saga keeps these tests."""

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import Envelope
from devstack.cli import main
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from kernel.messaging import ConsumedMessage, DeadLetters, dead_letter_topic
from kernel.projection_catalog import Catalog, LiveTarget, ProjectionVersionMismatch
from kernel.projection_runtime import ProjectionRunner, WriteConflict
from tests.integration.kafka_reading import read_topic
from tests.kernel_example.contracts import TOPIC, registered
from tests.kernel_example.messages import TallyLog
from tests.kernel_example.projection import TALLIES
from tests.mongo_commands import CommandCounter

Document = dict[str, Any]


@pytest.fixture(autouse=True)
def tally_contracts() -> Iterator[None]:
    with registered():
        yield


@pytest.fixture
async def database(mongo_url: str, mongo_database: str) -> AsyncIterator[AsyncDatabase[Any]]:
    counter = CommandCounter()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url, event_listeners=[counter])
    database = client[mongo_database]
    database.commands = counter.commands  # type: ignore[attr-defined]
    yield database
    await client.close()


@pytest.fixture
async def runner(database: AsyncDatabase[Any]) -> ProjectionRunner:
    """The live runner, without a dead-letter topic (for the tests that need none)."""
    runner = ProjectionRunner(TALLIES, database, None)
    await runner.prepare()
    return runner


def fresh_runner(runner: ProjectionRunner) -> ProjectionRunner:
    """Another runner on the same collections, knowing no document (a restart)."""
    return ProjectionRunner(TALLIES, runner.database, runner.dead_letters)


def commands(runner: ProjectionRunner) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = runner.database.commands  # type: ignore[attr-defined]
    return found


async def document(runner: ProjectionRunner, tally_id: str) -> Document | None:
    found: Document | None = await runner.database["tallies"].find_one({"_id": tally_id})
    return found


async def test_a_batch_applies_each_event_in_order(runner):
    log = TallyLog()
    start = log.started(name="pears")
    tally_id = Envelope.from_bytes(start.value or b"").subject
    result = await runner.handle(
        [start, log.added(tally_id, 2), log.added(tally_id, 3), log.closed(tally_id, "done")]
    )
    assert (result.events, result.written, result.rejected) == (4, 1, 0)
    doc = await document(runner, tally_id)
    assert doc is not None
    assert (doc["name"], doc["total"], doc["closed"], doc["reason"]) == ("pears", 5, True, "done")
    assert (doc["version"], doc["position"]) == (4, 4)
    assert doc["_applied"] == {f"tallies/{tally_id}": 4}


async def test_a_redelivered_batch_changes_nothing(runner):
    log, tally_id = TallyLog(), str(uuid.uuid4())
    batch = [log.started(tally_id), log.added(tally_id, 2)]
    await runner.handle(batch)
    before = await document(runner, tally_id)
    await runner.handle(batch)  # at-least-once: the same messages again
    await runner.handle(batch[:1])
    assert await document(runner, tally_id) == before


async def test_an_older_event_arriving_late_changes_nothing(runner):
    log, tally_id = TallyLog(), str(uuid.uuid4())
    start, two, three = log.started(tally_id), log.added(tally_id, 2), log.added(tally_id, 3)
    await runner.handle([start, two, three])
    before = await document(runner, tally_id)
    await runner.handle([two])  # version 2 after version 3: reordered
    after = await document(runner, tally_id)
    assert after == before
    assert after is not None and after["total"] == 5


async def test_a_batch_is_one_bulk_write_and_new_aggregates_are_not_looked_up(runner):
    log = TallyLog()
    ids = [str(uuid.uuid4()) for _ in range(50)]
    batch = [log.started(i) for i in ids] + [log.added(i, 1) for i in ids]
    commands(runner).clear()
    await runner.handle(batch)
    # No find: every tally starts in this batch (its first event). One insert batch for
    # the new documents, one update of the progress record, one look at the alias (the
    # cut-over fence).
    seen = commands(runner)
    assert seen.count(("find", "tallies")) == 0
    assert seen.count(("insert", "tallies")) == 1
    assert seen.count(("update", "projection_progress")) == 1
    assert seen.count(("find", "projection_aliases")) == 1
    assert len(seen) == 3, seen
    assert await runner.database["tallies"].count_documents({"total": 1}) == 50

    # The next batch on the same tallies loads nothing: the runner wrote them last.
    commands(runner).clear()
    await runner.handle([log.closed(i) for i in ids])
    assert commands(runner).count(("find", "tallies")) == 0
    assert commands(runner).count(("update", "tallies")) == 1
    assert await runner.database["tallies"].count_documents({"closed": True}) == 50


async def test_a_restarted_runner_loads_a_batchs_documents_in_one_find(runner):
    log = TallyLog()
    ids = [str(uuid.uuid4()) for _ in range(20)]
    await runner.handle([log.started(i) for i in ids])

    commands(runner).clear()
    await fresh_runner(runner).handle([log.added(i, 4) for i in ids])

    assert commands(runner).count(("find", "tallies")) == 1
    assert commands(runner).count(("update", "tallies")) == 1
    assert await runner.database["tallies"].count_documents({"total": 4}) == 20


async def test_a_start_redelivered_after_a_restart_changes_nothing(runner):
    """Taken for a new aggregate's first event (no lookup), it meets the stored document:
    a duplicate key, the batch is loaded and applied again, and the guard skips it."""
    log, tally_id = TallyLog(), str(uuid.uuid4())
    start = log.started(tally_id)
    await runner.handle([start, log.added(tally_id, 2)])
    before = await document(runner, tally_id)

    result = await fresh_runner(runner).handle([start])

    assert await document(runner, tally_id) == before
    assert (result.written, result.rejected) == (0, 0)


async def test_another_writers_change_is_caught_and_the_batch_reloaded(runner):
    """The runner does not reload documents it wrote; another writer's change to one
    of them still wins, and the event is applied on top of it."""
    log, tally_id = TallyLog(), str(uuid.uuid4())
    await runner.handle([log.started(tally_id)])
    tallies = runner.database["tallies"]
    await tallies.update_one({"_id": tally_id}, {"$set": {"note": "other"}, "$inc": {"_rev": 1}})

    await runner.handle([log.added(tally_id, 7)])

    after = await document(runner, tally_id)
    assert after is not None and after["total"] == 7 and after["note"] == "other"


async def test_a_document_another_writer_created_meanwhile_is_a_write_conflict(runner):
    log, tally_id = TallyLog(), str(uuid.uuid4())
    await runner.handle([log.started(tally_id)])
    before = await document(runner, tally_id)
    # This writer loaded the batch before the document existed (no revision).
    with pytest.raises(WriteConflict):
        await runner._write(runner.database["tallies"], {tally_id: {"_id": tally_id}}, {})
    assert await document(runner, tally_id) == before


async def test_progress_never_goes_back(runner):
    """A cut-over's drain may record an older offset of a partition after the live
    worker recorded a newer one: the progress keeps the newer."""
    log = TallyLog()
    newer = [log.started(), log.started()]
    older = ConsumedMessage(TOPIC, 0, newer[0].offset, newer[0].key, newer[0].value)
    await runner.handle(newer)
    await runner.handle([older])  # already applied: changes nothing but the progress

    progress = await runner.progress.find_one({"_id": f"{await runner.target()}:{TOPIC}:0"})
    assert progress is not None and progress["offset"] == newer[-1].offset
    assert progress["position"] == 2, "the log position of the last event applied"


async def test_poison_messages_go_to_the_dead_letter_topic_with_their_reason(
    database: AsyncDatabase[Any], kafka: str
):
    await ensure_topics(kafka, {dead_letter_topic(TOPIC): 1})
    producer = reliable_producer(kafka)
    await producer.start()
    try:
        runner = ProjectionRunner(TALLIES, database, DeadLetters(producer, "projections.tallies"))
        log, good = TallyLog(), str(uuid.uuid4())
        valid = log.started(good)
        started = Envelope.from_bytes(valid.value or b"")
        orphan = Envelope.from_bytes(log.added(str(uuid.uuid4()), 1).value or b"")
        poison = {
            b"not json at all": ("malformed", "not a valid envelope"),
            b'{"specversion": "1.0"}': ("malformed", "not a valid envelope"),
            started.model_copy(update={"type": "tallies.TallyShipped.v1"}).to_bytes(): (
                "unknown-type",
                "unknown event type",
            ),
            started.model_copy(update={"type": "tallies.TallyStarted.v9"}).to_bytes(): (
                "unsupported-version",
                "unsupported version",
            ),
            started.model_copy(update={"data": {"tally_id": good}}).to_bytes(): (
                "schema-violation",
                "violates its contract",
            ),
            orphan.to_bytes(): ("projection-failed", "never started"),
        }
        batch = [log.raw(value) for value in poison]
        batch.append(valid)
        result = await runner.handle(batch)
    finally:
        await stop_producer(producer)

    assert result.rejected == len(poison)
    assert await document(runner, good) is not None, "good messages in the batch still count"
    dead = await read_topic(kafka, dead_letter_topic(TOPIC), until=lambda r: len(r) >= 6)
    found = {
        record.value: (
            dict(record.headers)["dlq_reason_kind"].decode(),
            dict(record.headers)["dlq_reason"].decode(),
        )
        for record in dead
    }
    for value, (kind, reason) in poison.items():
        assert found[value][0] == kind and reason in found[value][1], found[value]
    first = dict(dead[0].headers)
    assert first["ce_id"] == b"x", "original headers are kept"
    assert (first["dlq_topic"], first["dlq_consumer"]) == (b"tallies", b"projections.tallies")
    assert int(first["dlq_offset"]) == batch[0].offset


# -- versions behind the alias ------------------------------------------------------


async def test_a_collection_from_before_versions_is_the_live_one_at_version_1(
    database: AsyncDatabase[Any],
):
    await database["tallies"].insert_one({"_id": "t-1", "total": 1})

    live = await Catalog(database).live(TALLIES)

    assert live == LiveTarget("tallies", 1)
    alias = await database["projection_aliases"].find_one({"_id": "tallies"})
    assert alias is not None and alias["collection"] == "tallies"


async def test_a_new_deployment_starts_on_the_plain_collection_at_the_current_version(
    database: AsyncDatabase[Any],
):
    second = dataclasses.replace(TALLIES, version=2)
    runner = ProjectionRunner(second, database, None)
    await runner.prepare()
    assert await runner.target() == "tallies"
    assert await Catalog(database).live(second) == LiveTarget("tallies", 2)


async def test_the_worker_refuses_a_collection_built_by_another_version(
    database: AsyncDatabase[Any],
):
    await database["tallies"].insert_one({"_id": "t-1", "total": 1})
    runner = ProjectionRunner(dataclasses.replace(TALLIES, version=2), database, None)

    with pytest.raises(ProjectionVersionMismatch, match="Run `cqrs replay tallies`"):
        await runner.prepare()
    with pytest.raises(ProjectionVersionMismatch):
        await runner.handle([])
    assert await database["tallies"].count_documents({}) == 1


async def test_a_batch_written_while_the_alias_switches_reaches_the_new_collection(
    database: AsyncDatabase[Any],
):
    """The live worker's fence: it resolved the old collection before the switch, so it
    applies the batch there, then sees the switch and, once the rebuild has drained,
    applies it to the new one too."""
    runner = ProjectionRunner(TALLIES, database, None)
    await runner.prepare()
    old = await runner.target()
    catalog = Catalog(database)
    await catalog.start_build(TALLIES, "tallies_v1_next", {"source": "kafka"})
    await catalog.switch(TALLIES, await catalog.live(TALLIES), "tallies_v1_next")
    log = TallyLog()
    first = log.started()

    handled = asyncio.create_task(runner.handle([first]))  # resolved before the switch
    with pytest.raises(TimeoutError):  # the rebuild is draining into the new collection
        await asyncio.wait_for(asyncio.shield(handled), timeout=1)
    assert await database["tallies_v1_next"].count_documents({}) == 0
    await catalog.drained(TALLIES, "tallies_v1_next")
    await asyncio.wait_for(handled, timeout=10)

    tally_id = Envelope.from_bytes(first.value or b"").subject
    for collection in (old, "tallies_v1_next"):
        assert await database[collection].find_one({"_id": tally_id}) is not None, collection
    assert await catalog.offsets("tallies_v1_next") == {(TOPIC, 0): first.offset}
    await runner.handle([log.started()])
    assert await database[old].count_documents({}) == 1, "later batches go to the new one only"
    assert await database["tallies_v1_next"].count_documents({}) == 2


async def test_drop_refuses_the_live_collection_and_drops_a_retired_one(
    database: AsyncDatabase[Any], mongo_url: str, mongo_database: str, monkeypatch: Any, capsys
):
    catalog = Catalog(database)
    live = await catalog.live(TALLIES)
    await catalog.start_build(TALLIES, "tallies_v1_new", {"source": "stores"})
    await database["tallies_v1_new"].insert_one({"_id": "t-1"})
    await catalog.switch(TALLIES, live, "tallies_v1_new")
    monkeypatch.setenv("MONGODB_URL", mongo_url)
    monkeypatch.setenv("MONGODB_DATABASE", mongo_database)

    def cqrs(*argv: str) -> int:  # the CLI runs its own event loop
        return main(list(argv))

    assert await asyncio.to_thread(cqrs, "projections", "drop", "tallies_v1_new") == 2
    assert "live collection" in capsys.readouterr().err
    assert await asyncio.to_thread(cqrs, "projections", "drop", "projection_aliases") == 2
    assert await asyncio.to_thread(cqrs, "projections", "drop", "tallies") == 0

    assert "tallies_v1_new" in await database.list_collection_names()
    assert await catalog.build("tallies") is None
    assert await catalog.live(TALLIES) == LiveTarget(
        "tallies_v1_new", TALLIES.version, draining=True
    ), "switched by hand: nothing drained it"
