"""``handle_batches`` in a real Faust worker on a real broker: a batch's offsets are
committed only once it is handled, though the next batch is taken meanwhile.

The worker is tests/kernel_example/batches.py; it commits every 0.1 s.
"""

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from kernel.kafka import ensure_topics
from tests import processes
from tests.support import wait_for, wait_for_async

HELD_FOR = 2.0  # seconds: twenty of the worker's commit intervals


class Batches:
    """One worker's topic, group and record of handled batches."""

    def __init__(self, kafka: str, directory: Path):
        self.kafka = kafka
        self.directory = directory
        self.topic = f"batches-{uuid.uuid4().hex[:8]}"
        self.group = f"batches-{uuid.uuid4().hex[:8]}"
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "BATCHES_TOPIC": self.topic,
            "BATCHES_GROUP_ID": self.group,
            "BATCHES_DIR": str(directory),
        }

    def start(self) -> processes.Process:
        return processes.faust_worker(
            "batches", "tests.kernel_example.batches:app", self.env, self.directory
        )

    def lines(self) -> list[str]:
        handled = self.directory / "handled"
        return handled.read_text().splitlines() if handled.exists() else []

    def handled(self) -> list[str]:
        """The values of the batches handled to the end, in order."""
        return [v for line in self.lines() if line.startswith("end ") for v in line.split()[1:]]

    async def send(self, *values: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(self.topic, value.encode())
        finally:
            await producer.stop()

    async def committed(self) -> int:
        """The group's committed offset of the topic's one partition (0: none)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.group)
        finally:
            await admin.close()
        found = offsets.get(TopicPartition(self.topic, 0))
        return max(found.offset, 0) if found is not None else 0


@pytest.fixture
async def batches(kafka: str, tmp_path: Path) -> Batches:
    found = Batches(kafka, tmp_path)
    await ensure_topics(kafka, {found.topic: 1})
    return found


async def committed_reaches(batches: Batches, offset: int, worker: processes.Process) -> None:
    async def reached() -> bool:
        return await batches.committed() == offset

    await wait_for_async(reached, timeout=30, message=f"offsets never committed\n{worker.log()}")


async def committed_stays(batches: Batches, offset: int, why: str) -> None:
    """The committed offset stays at ``offset`` for HELD_FOR seconds."""
    loop = asyncio.get_running_loop()
    held_until = loop.time() + HELD_FOR
    while loop.time() < held_until:
        assert await batches.committed() == offset, why
        await asyncio.sleep(0.1)


async def test_every_batch_is_handled_in_order_and_then_committed(batches: Batches):
    worker = batches.start()
    values = [f"m{i}" for i in range(30)]
    try:
        await batches.send(*values)
        wait_for(lambda: batches.handled() == values, timeout=60, message=worker.log())
        await committed_reaches(batches, len(values), worker)
    finally:
        worker.stop()


async def test_a_batch_taken_while_the_one_before_is_handled_commits_neither(
    batches: Batches,
):
    """The worker takes ``after`` while ``hold`` is still being handled: neither is
    committed until both are handled (a worker that died meanwhile would leave both to
    the next one). Once released, both are handled in order, then committed."""
    worker = batches.start()
    try:
        await batches.send("hold")
        wait_for(lambda: "begin hold" in batches.lines(), timeout=60, message=worker.log())
        await batches.send("after")
        await committed_stays(batches, 0, "a batch was committed before it was handled")
        assert batches.handled() == []

        (batches.directory / "release").touch()
        wait_for(lambda: batches.handled() == ["hold", "after"], timeout=60, message=worker.log())
        await committed_reaches(batches, 2, worker)
    finally:
        worker.stop()


async def test_an_error_of_the_handler_ends_the_agent_at_once_and_commits_nothing(
    batches: Batches,
):
    """Raised in the agent's own task as it happens, not when the next batch comes."""
    worker = batches.start()
    try:
        await batches.send("first")
        wait_for(lambda: batches.handled() == ["first"], timeout=60, message=worker.log())
        await batches.send("boom")
        wait_for(
            lambda: "RuntimeError('boom in batch boom')" in worker.log(),
            timeout=30,
            message=f"the handler's error was not raised\n{worker.log()}",
        )
        await committed_reaches(batches, 1, worker)
        await committed_stays(batches, 1, "the failed batch was committed")
        assert batches.handled() == ["first"]
    finally:
        worker.stop()


async def test_a_worker_stopped_while_it_handles_a_batch_commits_only_what_it_handled(
    batches: Batches,
):
    """SIGTERM while ``hold`` is handled and more has arrived: the worker leaves its
    group with none of it committed; the next worker handles all of it."""
    worker = batches.start()
    try:
        await batches.send("first")
        wait_for(lambda: batches.handled() == ["first"], timeout=60, message=worker.log())
        await batches.send("hold", "a", "b", "c")
        wait_for(lambda: "begin hold" in batches.lines(), timeout=60, message=worker.log())
        await committed_reaches(batches, 1, worker)
    finally:
        worker.stop()
    assert batches.handled() == ["first"]
    await committed_stays(batches, 1, "a batch was committed that was not handled")

    (batches.directory / "release").touch()
    restarted = batches.start()
    try:
        wait_for(
            lambda: batches.handled() == ["first", "hold", "a", "b", "c"],
            timeout=60,
            message=restarted.log(),
        )
    finally:
        restarted.stop()


async def test_a_message_lost_on_its_way_is_read_again_before_those_after_it(
    batches: Batches,
):
    """``lose`` vanishes before the consumer loop sees it (as faust-streaming can drop a
    message across a rebalance); ``after`` comes instead. It is held back and the
    partition read again from ``lose``: all are handled, in order, then committed."""
    worker = batches.start()
    try:
        await batches.send("first")
        wait_for(lambda: batches.handled() == ["first"], timeout=60, message=worker.log())
        await batches.send("lose", "after", "last")
        wait_for(
            lambda: batches.handled() == ["first", "lose", "after", "last"],
            timeout=30,
            message=f"handled {batches.handled()}\n{worker.log()}",
        )
        await committed_reaches(batches, 4, worker)
        assert "offset 1 was not delivered before later ones" in worker.log()
    finally:
        worker.stop()
