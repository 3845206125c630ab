"""A Faust worker of the kernel's own making, for the health tests:
``faust -A tests.kernel_example.worker:app worker --without-web``.

It reads the tallies topic through the kernel's consumer loop (``handle_batches``) in a
``kernel.streams.faust_app``, as every saga worker and the projections worker do, and
counts what it read. A message whose value is ``die`` ends its consumer task with an
error no retry catches (a bug): what the worker's health must notice. Where
``TALLIES_STALL=1``, a message whose value is ``stall`` pauses the fetching of its
partition, as a consumer that silently stops fetching it would (``StallWatch``).
"""

import os
from collections.abc import Sequence
from typing import Any

from kernel.settings import KafkaSettings
from kernel.streams import faust_app, handle_batches
from tests.kernel_example.contracts import TOPIC

POISON = b"die"
STALL = b"stall"
settings = KafkaSettings()
app = faust_app("tallies-worker", settings)
channel = app.topic(
    TOPIC, key_type=bytes, value_type=bytes, partitions=settings.kafka_topic_partitions
)


class ConsumerBug(RuntimeError):
    """Not an infrastructure error: it ends the consumer task."""


async def count(stream: Any) -> None:
    async def handle(events: Sequence[Any]) -> None:
        for event in events:
            if event.message.value == POISON:
                raise ConsumerBug("a message the worker cannot survive")
            if event.message.value == STALL and os.environ.get("TALLIES_STALL") == "1":
                app.consumer.pause_partitions([event.message.tp])

    await handle_batches(stream, 100, handle, name="tallies-worker.count")


app.agent(channel, name="tallies-worker.count")(count)
