"""A Faust worker that records the batches ``handle_batches`` hands it, for
tests/integration/test_handle_batches.py:
``faust -A tests.kernel_example.batches:app worker``.

Environment: KAFKA_BOOTSTRAP_SERVERS, BATCHES_TOPIC, BATCHES_GROUP_ID, BATCHES_DIR.
Each batch is a line ``begin v1 v2 ...`` in BATCHES_DIR/handled, then ``end ...`` once
handled. A batch holding ``hold`` is not finished until the file BATCHES_DIR/release
exists; one holding ``boom`` raises. The first ``lose`` to come is dropped before the
consumer loop sees it, as faust-streaming can drop a message across a rebalance
(``kernel.streams.Continuity``). Offsets are committed every 0.1 s (Faust's default
is 2.8 s), so that a batch acknowledged too early would be committed well within a
test's patience.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from kernel.settings import KafkaSettings
from kernel.streams import faust_app, handle_batches

directory = Path(os.environ.get("BATCHES_DIR", "var/batches"))
app = faust_app(
    os.environ.get("BATCHES_GROUP_ID", "batches"), KafkaSettings(), str(directory / "faust")
)
app.conf.broker_commit_interval = 0.1
topic = app.topic(
    os.environ.get("BATCHES_TOPIC", "batches"), key_type=bytes, value_type=bytes, partitions=1
)


def record(line: str) -> None:
    with (directory / "handled").open("a") as handled:
        handled.write(line + "\n")


async def handle(events: Sequence[Any]) -> None:
    values = " ".join(event.value.decode() for event in events)
    record(f"begin {values}")
    if "boom" in values.split():
        raise RuntimeError(f"boom in batch {values}")
    if "hold" in values.split():
        while not (directory / "release").exists():
            await asyncio.sleep(0.02)
    record(f"end {values}")


class LosingTheFirstLose:
    """The agent's stream, but the first ``lose`` message vanishes on its way."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.app = stream.app
        self.lost = False

    def noack(self) -> "LosingTheFirstLose":
        self.stream = self.stream.noack()
        return self

    async def events(self) -> AsyncIterator[Any]:
        async for event in self.stream.events():
            if event.value == b"lose" and not self.lost:
                self.lost = True
                continue
            yield event

    async def ack(self, event: Any) -> bool:
        return bool(await self.stream.ack(event))


@app.agent(topic, name="batches")
async def batches(stream: Any) -> None:
    await handle_batches(LosingTheFirstLose(stream), 100, handle)
