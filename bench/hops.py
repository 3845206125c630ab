"""Where an approved order's time goes, hop by hop, from the times its messages carry.

Every event an order causes carries two times: when its aggregate made it (the
envelope's ``time``, set while the command or reaction ran, before its commit) and when
its service's relay produced it (the Kafka message timestamp, CreateTime, set by the
producer at send). A `Tap` reads the four services' topics beside the system and keeps
both for each event of each order; with the time the read model showed the order
APPROVED, an order's path splits into hops that add up to its whole time:

- published → made: the next service's saga worker: fetch, batching, its reaction;
- made → published: that service's commit, then its relay's wake-up, read and send;
- the last hop, OrderApproved published → APPROVED seen: the projections worker's
  fetch, batching and upsert, and the change stream's delivery to the watcher (a few
  ms).

All the clocks are the one machine's wall clock. What a hop's processes *work* is
bounded by their CPU time per order (from /proc; it counts every thread, where a
pyinstrument profile samples only the main thread and the saga workers react in
worker threads); the rest of the hop's time is waiting: for a batch, a poll, a wake-up,
the broker, a lock, I/O, or a core.
"""

import asyncio
import contextlib
import json
import logging
import os
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.flows import Flow
from devstack.processes import Process
from kernel.kafka import pace_empty_fetches

log = logging.getLogger("bench")

EventTimes = dict[str, tuple[float, float]]
"""An order's events by name (``orders.OrderCreated``): (made, published), epoch seconds."""


@dataclass(frozen=True)
class Hop:
    name: str
    consumed: str | None  # the event the hop starts from (published); None: the command
    made: str | None  # the event it makes; None: the read model shows the order APPROVED
    processes: tuple[str, ...]  # whose CPU the hop's work is bounded by


APPROVED_PATH = (
    Hop("placed: OrderCreated made → published", None, "orders.OrderCreated",
        ("orders-api", "orders-relay")),
    Hop("→ ConsumerVerified published", "orders.OrderCreated", "consumers.ConsumerVerified",
        ("consumers-saga", "consumers-relay")),
    Hop("→ TicketCreated published", "consumers.ConsumerVerified", "kitchen.TicketCreated",
        ("kitchen-saga", "kitchen-relay")),
    Hop("→ CardAuthorized published", "kitchen.TicketCreated", "accounting.CardAuthorized",
        ("accounting-saga", "accounting-relay")),
    Hop("→ OrderApproved published", "accounting.CardAuthorized", "orders.OrderApproved",
        ("orders-saga", "orders-relay")),
    Hop("→ APPROVED in the read model", "orders.OrderApproved", None, ("projections",)),
)  # fmt: skip


@dataclass
class HopTimes:
    """Seconds spent on one hop by each order that went all the way."""

    total: list[float]
    in_worker: list[float]  # published → made (or, last hop, → seen)
    to_published: list[float]  # made → published


def hop_times(
    events: Mapping[str, EventTimes],
    seen: Mapping[str, float],
    path: Sequence[Hop] = APPROVED_PATH,
) -> dict[str, HopTimes]:
    """Each hop's times over the orders `seen` (order id → epoch seconds APPROVED was
    seen) whose every event on `path` was tapped; other orders are left out."""
    times = {hop.name: HopTimes([], [], []) for hop in path}
    for order_id, seen_at in seen.items():
        order = events.get(order_id, {})
        if any(hop.made is not None and hop.made not in order for hop in path) or any(
            hop.consumed is not None and hop.consumed not in order for hop in path
        ):
            continue
        for hop in path:
            hop_time = times[hop.name]
            start = order[hop.consumed][1] if hop.consumed else None
            if hop.made is None:
                assert start is not None
                hop_time.total.append(seen_at - start)
                hop_time.in_worker.append(seen_at - start)
                continue
            made, published = order[hop.made]
            hop_time.to_published.append(published - made)
            if start is None:
                hop_time.total.append(published - made)
            else:
                hop_time.total.append(published - start)
                hop_time.in_worker.append(made - start)
    return times


def seen_at(flow: Flow) -> dict[str, float]:
    """Order id → epoch seconds of the tick that saw it done."""
    return {c.key: c.seen + flow.wall_offset for c in flow.completions}


def median_ms(samples: Sequence[float]) -> float | None:
    return statistics.median(samples) * 1000 if samples else None


def event_name(cloud_event_type: str) -> str:
    """``orders.OrderCreated.v2`` → ``orders.OrderCreated``."""
    service, name, *_ = cloud_event_type.split(".")
    return f"{service}.{name}"


class Tap:
    """Reads topics from their start, keeping (made, published) for each order's events."""

    def __init__(self, bootstrap: str, topics: Iterable[str], partitions: int):
        self.bootstrap = bootstrap
        self.partitions = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self.events: dict[str, EventTimes] = {}
        self.counts: Counter[str] = Counter()  # messages read per topic

    def record(self, value: bytes, timestamp_ms: int) -> None:
        try:
            envelope = json.loads(value)
            order_id = envelope["data"]["order_id"]
            name = event_name(envelope["type"])
            made = datetime.fromisoformat(envelope["time"]).timestamp()
        except (ValueError, KeyError, TypeError):
            return  # not an order's event
        # A re-published copy keeps the first one's times.
        self.events.setdefault(order_id, {}).setdefault(name, (made, timestamp_ms / 1000))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Tap"]:
        pace_empty_fetches()  # as the system's consumers: no spinning on empty fetches
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        consumer.assign(self.partitions)
        await consumer.seek_to_beginning(*self.partitions)

        async def tap() -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for partition, records in batches.items():
                    for record in records:
                        if record.value is not None:
                            self.record(record.value, record.timestamp)
                    self.counts[partition.topic] += len(records)

        task = asyncio.create_task(tap())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await consumer.stop()


INPUTS = {
    "orders-saga": ("consumers", "kitchen", "accounting"),
    "consumers-saga": ("orders",),
    "kitchen-saga": ("consumers", "accounting"),
    "accounting-saga": ("kitchen",),
    "projections": ("orders", "consumers", "kitchen", "accounting"),
    **{
        f"{service}-relay": (service,)
        for service in ("orders", "consumers", "kitchen", "accounting")
    },
}
"""The topics each process reads (a saga worker, the projections worker) or writes (a
relay): every message on them is one it handles, reacted to or skipped."""


def messages_per_process(counts: Mapping[str, int]) -> dict[str, int]:
    """Messages each process of `INPUTS` handled, from messages per topic."""
    return {name: sum(counts.get(t, 0) for t in topics) for name, topics in INPUTS.items()}


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds (user and system, all threads) each process has used so far, from
    /proc/<pid>/stat; a process that is gone is left out."""
    used = {}
    for name, pid in pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (name) "
        used[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def run_queue_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """Seconds each process's threads have waited for a core so far (the run queue,
    /proc/<pid>/task/<tid>/schedstat; threads that ended are not counted)."""
    waited = {}
    for name, pid in pids.items():
        total = 0.0
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[1]) / 1e9
        waited[name] = total
    return waited


def pids(running: Iterable[Process]) -> dict[str, int]:
    return {process.name: process.pid for process in running}


def listening_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:`port` (TCP), found through its socket's inode
    in /proc; None if it cannot be told (another user's process, no /proc)."""
    wanted = f"0100007F:{port:04X}"
    inode = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # LISTEN
                inode = fields[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return int(fd_dir.parent.name)
    return None


def between(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What each counter of `after` grew by since `before`."""
    return {name: after[name] - before[name] for name in after if name in before}
