"""relay: events/s from the event store to the broker, beside a raw aiokafka producer.

The orders relay publishes a log of placed orders from SQLite and from PostgreSQL, as its
process does (`Relay.catch_up`: the pipeline of `Relay.run`, until the log is
exhausted). The baseline sends the very same messages (bytes, keys, CloudEvents headers)
with a bare `AIOKafkaProducer` of the relay's settings (idempotent, acks=all, no linger,
256 KiB producer batches), the way the relay sends them: batches of the same size, each
partition's messages in producer batches (aiokafka's batch API), at most as many batches
unacknowledged as the relay allows. That is the broker's and client's limit, without
reading the log, mapping events or recording the position. Rounds alternate relay, raw,
relay, raw, ... so drifting machine load hits both alike; each round publishes to a fresh
topic.
"""

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench import charts, profiling, stack, stats
from bench.examples import ADDRESS
from bench.scenario import BenchContext, Measurement, ScenarioResult
from contracts.orders import TOPIC as SOURCE
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from kernel.relay import (
    PRODUCER_MAX_BATCH_BYTES,
    Message,
    Relay,
    build_relay,
    send_in_batches,
)
from write_side.orders.application import OrdersApplication
from write_side.orders.bootstrap import build_application
from write_side.orders.relay import to_contract
from write_side.orders.settings import OrdersSettings

ITEMS = [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}]
BATCH_SIZE = 500  # RELAY_BATCH_SIZE's default
IN_FLIGHT = 2  # RELAY_BATCHES_IN_FLIGHT's default
PROGRESS_INTERVAL = 0.01  # seconds between two samples of the relay's recorded position
Progress = list[tuple[float, int]]


def place_orders(app: OrdersApplication, count: int) -> int:
    """`count` events in the log: placed orders, every third one approved too."""
    placed = 0
    while placed < count:
        saved = app.place_order(f"customer-{placed % 50}", "restaurant-1", ADDRESS, ITEMS)
        placed += 1
        if placed % 3 == 0 and placed < count:
            app.approve_order(saved.order_id)
            placed += 1
    return int(app.recorder.max_notification_id() or 0)


async def relay_round(relay: Relay) -> tuple[float, Progress]:
    """Seconds to publish the whole log from position 0, and the progress points."""
    await relay.producer.start()
    try:
        progress: Progress = [(0.0, 0)]
        start = time.perf_counter()
        publishing = asyncio.create_task(relay.catch_up(0))
        while not publishing.done():
            await asyncio.wait({publishing}, timeout=PROGRESS_INTERVAL)
            progress.append((time.perf_counter() - start, relay.recorded or 0))
        await publishing
        return time.perf_counter() - start, progress
    finally:
        await stop_producer(relay.producer)


async def raw_round(bootstrap: str, topic: str, messages: list[Message]) -> tuple[float, Progress]:
    """The same messages through a bare producer, sent as the relay sends them."""
    producer = reliable_producer(bootstrap, linger_ms=0, max_batch_size=PRODUCER_MAX_BATCH_BYTES)
    await producer.start()
    try:
        progress: Progress = [(0.0, 0)]
        unacknowledged: list[tuple[int, list[asyncio.Future[object]]]] = []
        start = time.perf_counter()

        async def acknowledged() -> None:
            done, acks = unacknowledged.pop(0)
            await asyncio.gather(*acks)
            progress.append((time.perf_counter() - start, done))

        for first in range(0, len(messages), BATCH_SIZE):
            while len(unacknowledged) >= IN_FLIGHT:  # as the relay waits for room
                await acknowledged()
            acks = await send_in_batches(producer, topic, messages[first : first + BATCH_SIZE])
            unacknowledged.append((min(first + BATCH_SIZE, len(messages)), acks))
        while unacknowledged:
            await acknowledged()
        return time.perf_counter() - start, progress
    finally:
        await stop_producer(producer)


@contextmanager
def orders_store(context: BenchContext, kind: str) -> Iterator[OrdersSettings]:
    if kind == "SQLite":
        url = f"sqlite:///{context.work_dir}/relay-orders.db"
        yield OrdersSettings(
            orders_database_url=url, kafka_bootstrap_servers=context.kafka_bootstrap
        )
        return
    with stack.postgres_schema(context.postgres_url) as schema:
        yield OrdersSettings(
            orders_database_url=context.postgres_url,
            orders_database_schema=schema,
            kafka_bootstrap_servers=context.kafka_bootstrap,
        )


async def measure_store(
    context: BenchContext, settings: OrdersSettings, kind: str, events: int, rounds: int
) -> tuple[Measurement, dict[str, Progress], str]:
    app = build_application(settings)
    try:
        last = await asyncio.to_thread(place_orders, app, events)
        bootstrap = context.kafka_bootstrap
        relay_rates, raw_rates = [], []
        progress: dict[str, Progress] = {}
        messages: list[Message] = []
        suffix = "sqlite" if kind == "SQLite" else "pg"  # tracking names: 32 chars at most
        for round_ in range(rounds):
            topics = {f"bench-relay-{suffix}-{round_}": 4, f"bench-raw-{suffix}-{round_}": 4}
            await ensure_topics(bootstrap, topics)
            relay = build_relay(
                app,
                settings,
                source=SOURCE,
                topic=f"bench-relay-{suffix}-{round_}",
                to_contract=to_contract,
            )
            if not messages:  # built once, outside any timing
                notifications = app.recorder.select_notifications(1, last)
                messages = [m for n in notifications for m in relay.encoder.messages(n)]
            seconds, relay_progress = await relay_round(relay)
            relay_rates.append(last / seconds)
            raw_seconds, raw_progress = await raw_round(
                bootstrap, f"bench-raw-{suffix}-{round_}", messages
            )
            raw_rates.append(len(messages) / raw_seconds)
            if round_ == 0:
                progress = {
                    f"relay ({kind})": relay_progress,
                    f"raw producer ({kind})": raw_progress,
                }
        profile_topic = f"bench-relay-{suffix}-prof"
        await ensure_topics(bootstrap, {profile_topic: 4})
        relay = build_relay(
            app, settings, source=SOURCE, topic=profile_topic, to_contract=to_contract
        )
        _, session = await profiling.profiled(
            lambda: relay_round(relay), context.work_dir / f"relay-{suffix}.pyisession"
        )

        async def read_and_map() -> None:  # the worker thread's part, here in this one
            position = 0
            while position < last:
                position = relay.read_batch(position).last

        _, reading = await profiling.profiled(
            read_and_map, context.work_dir / f"relay-read-{suffix}.pyisession"
        )
    finally:
        app.close()
    measurement = Measurement(
        what=f"{kind} store, {last} events, batches of {BATCH_SIZE}",
        value=stats.median(relay_rates),
        unit="events/s",
        baseline_name="raw aiokafka producer",
        baseline=stats.median(raw_rates),
    )
    spread = (
        f"{kind}: relay {stats.spread(relay_rates)} events/s, raw {stats.spread(raw_rates)} "
        f"messages/s over {rounds} rounds; ratio per round "
        f"{stats.paired_ratios(relay_rates, raw_rates)}"
    )
    return (
        measurement,
        progress,
        (
            f"{spread}. Profile of the relay's event loop (sending, acks, recording): "
            f"{profiling.summary(session)} Profile of reading and mapping (a worker thread "
            f"of the relay, profiled here on its own): {profiling.summary(reading)}"
        ),
    )


async def run(context: BenchContext) -> ScenarioResult:
    events, rounds = (60, 1) if context.quick else (3000, 3)
    result = ScenarioResult("Relay: event store → broker")
    progress: dict[str, Progress] = {}
    for kind in stack.stores(context, result.notes):
        with orders_store(context, kind) as settings:
            measurement, points, note = await measure_store(context, settings, kind, events, rounds)
        result.measurements.append(measurement)
        result.notes.append(note)
        progress.update(points)
    result.notes.append(
        "The relay's extra work, which the raw producer skips: per batch, one SELECT of the "
        "next notifications and one UPDATE of the tracking position after the acks; per "
        "event, decoding the stored event, mapping it to its contract (the domain's "
        "`to_contract`, pydantic) and writing the envelope. Rates count events for the "
        "relay and messages for the raw producer (an event published in two majors is two "
        "messages)."
    )
    result.charts.append(
        charts.throughput_over_time(
            context.image_dir / "relay-throughput.png",
            "Relay vs raw producer (first round)",
            progress,
            "events/s",
        )
    )
    return result
