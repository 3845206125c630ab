"""Rebuilding a read model (``kernel.replay``) on the kernel's own tallies domain
(tests/kernel_example): the tallies' event store on SQLite, published by their relay,
projected live by a runner fed from the topic; rebuilds from the store and from Kafka
into new collections, with and without the switch, the shadow check that stops a
switch, and what ``cqrs projections status`` and the read side's live collections show.

The reference saga's rebuild tests (four stores, the Faust worker, queries and writes
during a cut-over) are tests/integration/test_replay.py.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from devstack.cli import main
from devstack.servers import KafkaBroker
from kernel.errors import NotFound
from kernel.kafka import ensure_topics
from kernel.messaging import ConsumedMessage, dead_letter_topic
from kernel.projection_catalog import BuildState, Catalog, LiveTarget
from kernel.projection_runtime import ProjectionRunner
from kernel.projections_status import projections_status
from kernel.read_models import LiveCollections
from kernel.replay import BOOKKEEPING, Replay, ReplayOptions
from operations.replay import store_log
from tests.integration.kafka_reading import read_all
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.contracts import TOPIC, registered
from tests.kernel_example.domain import Tally
from tests.kernel_example.projection import TALLIES
from tests.kernel_example.relay import (
    TalliesRelaySettings,
    open_tallies,
    tallies_relay,
    to_contract,
)

TALLY_COUNT = 30
Document = dict[str, Any]


class Killed(Exception):
    """A rebuild stopped mid-way (as by SIGKILL: nothing after it runs)."""


@dataclass
class Stack:
    app: TalliesApplication
    settings: TalliesRelaySettings
    database: AsyncDatabase[Any]
    bootstrap: str
    live: ProjectionRunner
    mongo_url: str
    applied: set[tuple[int, int]] = field(default_factory=set)
    """(partition, offset) of each record of the topic the live runner has applied."""

    def replay(self, **options: Any) -> Replay:
        logs = [store_log(TalliesApplication.name, self.app, to_contract)]
        return Replay(
            TALLIES,
            self.database,
            self.bootstrap,
            logs,
            ReplayOptions(**{"poll_timeout": 0.2, **options}),
        )

    async def write_and_project(self, names: list[str], amount: int = 1) -> None:
        """Start (or add to) these tallies, publish, and project live what is new."""
        for name in names:
            try:
                self.app.get_tally(name)
            except NotFound:
                self.app.start_tally(name)
            self.app.add_to_tally(name, amount)
        relay = tallies_relay(self.app, self.settings)
        await relay.producer.start()
        try:
            position, last = relay.position(), self.app.recorder.max_notification_id() or 0
            while position < last:
                position, _ = await relay.publish_next_batch(position)
        finally:
            await relay.producer.stop()
        records = await read_all(self.bootstrap, TOPIC)
        fresh = [r for r in records if (r.partition, r.offset) not in self.applied]
        await self.live.handle([ConsumedMessage.of_record(r) for r in fresh])
        self.applied |= {(r.partition, r.offset) for r in fresh}


@pytest.fixture(scope="module")
def tally_contracts() -> Iterator[None]:
    with registered():
        yield


@pytest.fixture(scope="module")
async def stack(
    tally_contracts: None, tmp_path_factory: pytest.TempPathFactory, mongo_url: str
) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("kernel-replay")
    broker = KafkaBroker(tmp / "kafka").start()  # its own: rebuilds read whole topics
    database_name = f"kernel_replay_{tmp.name[-6:]}"
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url, tz_aware=True)
    settings = TalliesRelaySettings(
        tallies_database_url=f"sqlite:///{tmp}/tallies.db",
        kafka_bootstrap_servers=broker.bootstrap,
    )
    app = open_tallies(settings)
    try:
        await ensure_topics(broker.bootstrap, {TOPIC: 2, dead_letter_topic(TOPIC): 1})
        live = ProjectionRunner(TALLIES, client[database_name], None)
        await live.prepare()
        stack = Stack(app, settings, client[database_name], broker.bootstrap, live, mongo_url)
        await stack.write_and_project([f"tally-{i}" for i in range(TALLY_COUNT)])
        await stack.write_and_project([f"tally-{i}" for i in range(0, TALLY_COUNT, 3)], 2)
        yield stack
    finally:
        app.close()
        await client.drop_database(database_name)
        await client.close()
        broker.stop()


async def documents(database: AsyncDatabase[Any], collection: str) -> dict[str, Document]:
    """The collection's documents by id, without ``_rev`` (a count of writes)."""
    return {
        d["_id"]: {k: v for k, v in d.items() if k not in BOOKKEEPING}
        async for d in database[collection].find({})
    }


async def live_documents(stack: Stack) -> dict[str, Document]:
    live = await Catalog(stack.database).live(TALLIES)
    return await documents(stack.database, live.collection)


async def test_rebuilds_from_the_store_and_from_kafka_equal_the_live_read_model_no_switch(
    stack: Stack,
):
    live_before = await Catalog(stack.database).live(TALLIES)
    live = await live_documents(stack)
    assert len(live) == TALLY_COUNT
    assert {d["total"] for d in live.values()} == {1, 3}
    for source in ("stores", "kafka"):
        summary = await stack.replay(source=source, switch=False).run()
        assert summary.collection.startswith(f"tallies_v{TALLIES.version}_")
        assert summary.events > 0 and not summary.switched and summary.shadow is None
        assert await documents(stack.database, summary.collection) == live, source
        build = await Catalog(stack.database).build(summary.collection)
        assert build is not None and build["state"] == BuildState.BUILT
    assert await Catalog(stack.database).live(TALLIES) == live_before, "--no-switch"


async def test_a_rebuild_from_a_position_applies_only_the_events_after_it(stack: Stack):
    summary = await stack.replay(switch=False, from_position=TALLY_COUNT * 2).run()
    built = await documents(stack.database, summary.collection)
    # The first round (start and add, two events per tally) is before that position:
    # what is after it are the second additions, to tallies never started in this build.
    assert built == {}
    assert summary.skipped == TALLY_COUNT // 3, "each refused: its tally never started"


async def test_a_shadow_check_with_differences_stops_the_switch_unless_forced(stack: Stack):
    catalog = Catalog(stack.database)
    live = await catalog.live(TALLIES)
    tallies = stack.database[live.collection]
    await tallies.update_one({"_id": (await tallies.find_one({}))["_id"]}, {"$inc": {"total": 100}})
    try:
        summary = await stack.replay(switch=True).run()
        assert not summary.switched and summary.shadow is not None
        assert len(summary.shadow.different) == 1, summary.shadow.describe()
        assert await catalog.live(TALLIES) == live
        build = await catalog.build(summary.collection)
        assert build is not None and build["state"] == BuildState.BUILT
        assert "1 different" in build["shadow"]

        forced = await stack.replay(switch=True, force=True).run()
        assert forced.switched and forced.shadow is not None and not forced.shadow.equal
        assert await catalog.live(TALLIES) == LiveTarget(forced.collection, TALLIES.version)
    finally:
        await tallies.update_one({"total": {"$gt": 100}}, {"$inc": {"total": -100}})


async def test_a_rebuild_switches_and_the_live_side_follows(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    catalog = Catalog(stack.database)
    previous = await catalog.live(TALLIES)
    reader = LiveCollections(stack.database, ttl=0)
    cached = LiveCollections(stack.database, ttl=600)
    for live in (reader, cached):
        assert await live.name("tallies") == previous.collection
    before = await live_documents(stack)

    summary = await stack.replay(source="kafka").run()

    assert summary.switched and summary.previous == previous.collection
    assert summary.shadow is not None and summary.shadow.equal, summary.shadow.describe()
    assert await reader.name("tallies") == summary.collection, "the read side reads the new one"
    assert await cached.name("tallies") == previous.collection, "until its cache expires"
    assert (await catalog.build(summary.collection) or {})["state"] == BuildState.LIVE
    assert (await catalog.build(previous.collection) or {})["state"] == BuildState.RETIRED
    assert await documents(stack.database, summary.collection) == before

    # The live runner's next batch: to the collection it had resolved, then, seeing the
    # switch, to the new one too (the fence); the batches after it to the new one only.
    await stack.write_and_project(["tally-0", "tally-new"], 5)
    await stack.write_and_project(["tally-newer"], 1)
    new = await documents(stack.database, summary.collection)
    assert new[str(Tally.create_id("tally-0"))]["total"] == 3 + 5
    assert len(new) == TALLY_COUNT + 2
    old = await documents(stack.database, previous.collection)
    assert str(Tally.create_id("tally-newer")) not in old

    statuses = await projections_status(stack.database, stack.bootstrap)
    [status] = [s for s in statuses if s["projection"] == "tallies"]
    assert status["collection"] == summary.collection and status["version"] == TALLIES.version
    assert status["lag_events"] == 0 and status["rebuilds"] == []
    assert {p["topic"] for p in status["partitions"]} == {TOPIC}

    monkeypatch.setenv("MONGODB_URL", stack.mongo_url)
    monkeypatch.setenv("MONGODB_DATABASE", stack.database.name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap)
    assert await asyncio.to_thread(main, ["projections", "status", "--json"]) == 0
    [shown] = [s for s in json.loads(capsys.readouterr().out) if s["projection"] == "tallies"]
    assert (shown["collection"], shown["lag_events"]) == (summary.collection, 0)


async def test_an_unfinished_rebuild_is_shown_and_resumed(stack: Stack):
    catalog = Catalog(stack.database)
    replay = stack.replay(switch=False, batch_size=5)
    real_update = catalog.update_build

    async def stop_after_the_first_checkpoint(collection: str, fields: Document, *rest: Any):
        await real_update(collection, fields, *rest)
        if "store_checkpoint" in fields:
            raise Killed()

    replay.catalog.update_build = stop_after_the_first_checkpoint  # type: ignore[method-assign]
    with pytest.raises(Killed):
        await replay.run()
    unfinished = await catalog.latest_unfinished_build(TALLIES)
    assert unfinished is not None and unfinished["state"] == BuildState.BUILDING
    statuses = await projections_status(stack.database, stack.bootstrap)
    [status] = [s for s in statuses if s["projection"] == "tallies"]
    assert [b["collection"] for b in status["rebuilds"]] == [unfinished["_id"]]

    summary = await stack.replay(switch=False, resume=True).run()

    assert summary.collection == unfinished["_id"], "the killed rebuild was continued"
    assert await documents(stack.database, summary.collection) == await live_documents(stack)


async def test_the_live_side_waits_for_the_drain_and_resume_finishes_a_stopped_one(
    stack: Stack,
):
    """Killed between its switch and the end of its drain, a rebuild leaves the alias
    draining: the live runner applies its batch to the old collection, then writes
    nothing to the new one (a later event there first would make the version guard skip
    the drained earlier one) until ``--resume`` has finished the drain."""
    catalog = Catalog(stack.database)
    previous = await catalog.live(TALLIES)
    replay = stack.replay(source="kafka")
    switch = replay.catalog.switch

    async def switch_after_more_live_writes(*args: Any) -> None:
        await stack.write_and_project(["tally-1", "tally-drained"], 7)  # old only
        await switch(*args)

    async def killed_in_the_drain(*args: Any) -> None:
        raise Killed()

    replay.catalog.switch = switch_after_more_live_writes  # type: ignore[method-assign]
    replay._drain = killed_in_the_drain  # type: ignore[method-assign]
    with pytest.raises(Killed):
        await replay.run()
    live = await catalog.live(TALLIES)
    assert live.draining and live.collection != previous.collection
    [status] = await projections_status(stack.database, stack.bootstrap)
    assert status["draining"] and status["collection"] == live.collection
    drained_id = str(Tally.create_id("tally-drained"))
    assert await stack.database[live.collection].find_one({"_id": drained_id}) is None

    later = asyncio.create_task(stack.write_and_project(["tally-1", "tally-later"], 11))
    with pytest.raises(TimeoutError):  # it waits: the drain has not run
        await asyncio.wait_for(asyncio.shield(later), timeout=2)
    new = await documents(stack.database, live.collection)
    assert str(Tally.create_id("tally-later")) not in new
    assert str(Tally.create_id("tally-later")) in await documents(
        stack.database, previous.collection
    ), "the batch went to the collection the runner had resolved"

    summary = await stack.replay(resume=True).run()
    await asyncio.wait_for(later, timeout=30)

    assert summary.switched and summary.collection == live.collection
    assert summary.previous == previous.collection and summary.events > 0
    assert not (await catalog.live(TALLIES)).draining
    [status] = await projections_status(stack.database, stack.bootstrap)
    assert not status["draining"]
    new = await documents(stack.database, live.collection)
    assert new[drained_id]["total"] == 7
    assert new[str(Tally.create_id("tally-later"))]["total"] == 11
    fresh = await stack.replay(source="kafka", switch=False).run()
    assert await documents(stack.database, fresh.collection) == new, "each event once"
