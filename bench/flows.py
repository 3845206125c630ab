"""Commands through the running system, timed until their effect shows in the read model.

`place_orders` offers `POST /orders` at a fixed rate (open loop; `offer` does it for any
way of placing one) and a watcher follows the read model's changes (a MongoDB change
stream, opened before the first command) until each order matches a condition (visible,
or APPROVED). Latency runs from the command's 201 to the change that shows it, delivered
within a few milliseconds of the write. The watching costs the server next to nothing:
polling instead (every 10 ms, one query for the orders still awaited, as before
2026-12-05) cost SecantusDB 0.05 to 0.1 of a core with 5 to 20 orders awaited (measured
alone), more with more: taken from the system it watched on a 2-core machine.

`raw_hops` is the reference: the same offered rate through `hops` topics of the same
broker with bare aiokafka (produce, consume, produce to the next topic, ...), i.e. what
the broker and client library alone cost per hop.
"""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo.asynchronous.collection import AsyncCollection

from bench import http as bench_http
from bench.examples import ADDRESS
from bench.load import LoadRun, open_loop
from kernel.kafka import ensure_topics

PIZZA = {"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}


@dataclass(frozen=True)
class Completion:
    """One order seen: `time.perf_counter()` at its 201 and at the change that showed it."""

    key: str
    accepted: float
    seen: float


@dataclass
class Flow:
    accepted: LoadRun  # POST /orders: latency from due time to 201
    effect: list[float] = field(default_factory=list)  # seconds from 201 to seen
    missing: int = 0  # accepted but never seen before the deadline
    completions: list[Completion] = field(default_factory=list)
    started: float = 0.0  # perf_counter when the first command was due
    wall_offset: float = 0.0  # time.time() - time.perf_counter(), to match event times

    def saturation(self, offered: float) -> str | None:
        """A note when the API answered clearly slower than the rate offered."""
        achieved = self.accepted.rate
        if achieved >= 0.9 * offered:
            return None
        return (
            f"offered {offered:g} commands/s, answered {achieved:.0f}/s: the command API was "
            "saturated, so its answer latencies include queueing"
        )


async def offer(
    place: Callable[[int], Awaitable[str | None]],
    collection: AsyncCollection[dict[str, Any]],
    condition: dict[str, Any],
    *,
    rate: float,
    count: int,
    drain_timeout: float = 120,
) -> Flow:
    """Call `place(i)` at `rate` (open loop); each returns the id of the document to
    watch for (None: failed), timed from its return until the document matches
    `condition` (field → value or operator, as in a find)."""
    pending: dict[str, float] = {}
    early: dict[str, float] = {}  # seen before `place` returned its id
    flow = Flow(LoadRun())
    sending = True
    all_seen = asyncio.Event()

    def seen(key: str, accepted: float, now: float) -> None:
        flow.effect.append(max(0.0, now - accepted))
        flow.completions.append(Completion(key, accepted, now))
        if not sending and not pending:
            all_seen.set()

    async def watch(changes: Any) -> None:
        async for change in changes:
            now, key = time.perf_counter(), change["documentKey"]["_id"]
            accepted = pending.pop(key, None)
            if accepted is None:
                early.setdefault(key, now)  # or seen again: a later change of a seen one
            else:
                seen(key, accepted, now)

    async def one(i: int) -> bool:
        key = await place(i)
        if key is None:
            return False
        accepted = time.perf_counter()
        if key in early:
            seen(key, accepted, early.pop(key))
        else:
            pending[key] = accepted
        return True

    matching = {f"fullDocument.{name}": value for name, value in condition.items()}
    changes = await collection.watch([{"$match": matching}], full_document="updateLookup")
    watcher = asyncio.create_task(watch(changes))
    flow.wall_offset = time.time() - time.perf_counter()
    flow.started = time.perf_counter()
    try:
        flow.accepted = await open_loop(rate, count, one)
        sending = False
        if pending:
            drained = asyncio.create_task(all_seen.wait())
            try:
                async with asyncio.timeout(drain_timeout):  # or until the watcher ends
                    await asyncio.wait({drained, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                drained.cancel()
    except TimeoutError:
        flow.missing = len(pending)
        pending.clear()
    finally:
        sending = False
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await changes.close()
    if not watcher.cancelled():  # it ended by itself: the stream failed, or was invalidated
        raise RuntimeError("the read model's change stream ended") from watcher.exception()
    return flow


async def place_orders(
    orders_url: str,
    collection: AsyncCollection[dict[str, Any]],
    condition: dict[str, Any],
    *,
    rate: float,
    count: int,
    customer_id: str,
    restaurant_id: str,
    drain_timeout: float = 120,
) -> Flow:
    body = {
        "customer_id": customer_id,
        "restaurant_id": restaurant_id,
        "delivery_address": ADDRESS,
        "line_items": [PIZZA],
    }
    async with bench_http.client(orders_url, connections=200) as http:

        async def place(i: int) -> str | None:
            placed = await bench_http.post_json(http, "/orders", body, expect=201)
            return None if placed is None else str(placed["order_id"])

        return await offer(
            place, collection, condition, rate=rate, count=count, drain_timeout=drain_timeout
        )


async def raw_hops(bootstrap: str, hops: int, rate: float, count: int) -> list[float]:
    """Latencies (seconds) of `count` messages offered at `rate` through `hops` topics."""
    prefix = f"bench-hop-{uuid.uuid4().hex[:6]}"
    topics = [f"{prefix}-{i}" for i in range(hops)]
    await ensure_topics(bootstrap, dict.fromkeys(topics, 1))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5
    )
    consumers = [AIOKafkaConsumer(bootstrap_servers=bootstrap) for _ in topics]
    await producer.start()
    for consumer, topic in zip(consumers, topics, strict=True):
        await consumer.start()
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    arrived = asyncio.Event()

    async def forward(consumer: AIOKafkaConsumer, next_topic: str | None) -> None:
        async for record in consumer:
            if next_topic is not None:
                await producer.send(next_topic, record.value)
                continue
            latencies.append(time.perf_counter() - sent.pop(record.value))
            if len(latencies) == count:
                arrived.set()

    tasks = [
        asyncio.create_task(forward(c, topics[i + 1] if i + 1 < hops else None))
        for i, c in enumerate(consumers)
    ]

    async def send(i: int) -> bool:
        key = str(i).encode()
        sent[key] = time.perf_counter()
        await producer.send(topics[0], key)
        return True

    try:
        await open_loop(rate, count, send)
        async with asyncio.timeout(60):
            await arrived.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()
    return latencies
