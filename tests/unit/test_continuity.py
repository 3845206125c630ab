"""``kernel.streams.Continuity``: each partition's messages handled as an unbroken run."""

import asyncio
from dataclasses import dataclass

from kernel.health import Consumer
from kernel.streams import Continuity


@dataclass
class Message:
    topic: str
    partition: int
    offset: int


@dataclass
class Event:
    message: Message


def events(*offsets: tuple[int, int]) -> list[Event]:
    return [Event(Message("t", partition, offset)) for partition, offset in offsets]


def continuity(
    clock: list[float] | None = None, **handled: int
) -> tuple[Continuity, list[tuple[str, int, int]]]:
    consumer = Consumer("c")
    for partition, offset in handled.items():
        consumer.handled("t", int(partition.removeprefix("p")), offset)
    rewound: list[tuple[str, int, int]] = []

    async def rewind(topic: str, partition: int, offset: int) -> bool:
        rewound.append((topic, partition, offset))
        return partition != 9  # partition 9: not this worker's any more

    now = clock or [0.0]
    return Continuity(consumer, rewind, clock=lambda: now[0]), rewound


def test_a_run_that_goes_on_is_kept_whole():
    runs, _ = continuity(p0=4)
    batch = events((0, 5), (1, 9), (0, 6), (1, 10))
    assert runs.split(batch) == batch
    assert runs.missing == {}


def test_a_partition_seen_first_starts_its_run_anywhere():
    runs, _ = continuity()
    batch = events((0, 40), (0, 41))
    assert runs.split(batch) == batch


def test_after_a_gap_the_partition_is_held_back_and_the_others_go_on():
    runs, _ = continuity(p0=4, p1=8)
    batch = events((0, 5), (0, 7), (1, 9), (0, 8))
    assert runs.split(batch) == [batch[0], batch[2]]
    assert runs.missing == {("t", 0): 6}


def test_a_message_read_again_is_kept_for_the_inbox_to_tell():
    runs, _ = continuity(p0=4)
    batch = events((0, 2), (0, 3), (0, 4), (0, 5))
    assert runs.split(batch) == batch


def test_a_partition_is_rewound_once_a_second_until_its_missing_offset_comes():
    clock = [100.0]
    runs, rewound = continuity(clock, p0=4)
    runs.split(events((0, 6), (0, 7)))
    asyncio.run(runs.rewind_due())
    runs.split(events((0, 7)))  # fetched already: still held back
    asyncio.run(runs.rewind_due())
    assert rewound == [("t", 0, 5)]
    clock[0] += 1.0  # nothing came within a second: sent back again
    asyncio.run(runs.rewind_due())
    assert rewound == [("t", 0, 5), ("t", 0, 5)]
    assert runs.split(events((0, 5), (0, 6))) == events((0, 5), (0, 6))
    assert runs.missing == {}
    clock[0] += 5.0
    asyncio.run(runs.rewind_due())
    assert len(rewound) == 2


def test_a_partition_that_cannot_be_rewound_is_left_to_its_next_owner():
    runs, rewound = continuity(p9=4)
    runs.split([Event(Message("t", 9, 6))])
    asyncio.run(runs.rewind_due())
    assert rewound == [("t", 9, 5)]
    assert runs.missing == {}
