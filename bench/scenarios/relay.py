"""relay: events/s from the event store to the broker, beside a raw aiokafka producer.

The orders relay (`Relay.publish_next_batch`, as its process runs it) publishes a log
of placed orders from SQLite and from PostgreSQL. The baseline sends the very same
envelopes (bytes, keys, CloudEvents headers), in batches of the same size, with a bare
`AIOKafkaProducer` of the same settings (idempotent, acks=all, linger 5 ms): the
broker's and client's limit, without reading the log, mapping events or recording the
position. Rounds alternate relay, raw, relay, raw, ... so drifting machine load hits
both alike; each round publishes to a fresh topic.
"""

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka import AIOKafkaProducer

from bench import charts, profiling, stack, stats
from bench.examples import ADDRESS
from bench.scenario import BenchContext, Measurement, ScenarioResult
from contracts.envelope import Envelope
from write_side.kernel.kafka import ensure_topics, stop_producer
from write_side.kernel.relay import Relay, build_relay
from write_side.orders.application import OrdersApplication
from write_side.orders.bootstrap import build_application
from write_side.orders.relay import SOURCE, to_contract
from write_side.orders.settings import OrdersSettings

ITEMS = [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}]
BATCH_SIZE = 500  # RELAY_BATCH_SIZE's default
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


async def relay_round(relay: Relay, last: int) -> tuple[float, Progress]:
    """Seconds to publish the whole log from position 0, and the progress points."""
    await relay.producer.start()
    try:
        progress: Progress = [(0.0, 0)]
        start = time.perf_counter()
        position = 0
        while position < last:
            position, _ = await relay.publish_next_batch(position)
            progress.append((time.perf_counter() - start, position))
        return time.perf_counter() - start, progress
    finally:
        await stop_producer(relay.producer)


async def raw_round(
    bootstrap: str, topic: str, envelopes: list[Envelope]
) -> tuple[float, Progress]:
    """The same envelopes through a bare producer, batch by batch, each batch acked."""
    messages = [(e.to_bytes(), e.subject.encode(), e.kafka_headers()) for e in envelopes]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        progress: Progress = [(0.0, 0)]
        start = time.perf_counter()
        for first in range(0, len(messages), BATCH_SIZE):
            batch = messages[first : first + BATCH_SIZE]
            acks = [
                await producer.send(topic, value=value, key=key, headers=headers)
                for value, key, headers in batch
            ]
            await asyncio.gather(*acks)
            progress.append((time.perf_counter() - start, first + len(batch)))
        return time.perf_counter() - start, progress
    finally:
        await producer.stop()


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
        envelopes: list[Envelope] = []
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
            if not envelopes:  # built once, outside any timing
                notifications = app.recorder.select_notifications(1, last)
                envelopes = [e for n in notifications for e in relay.envelopes(n)]
            seconds, relay_progress = await relay_round(relay, last)
            relay_rates.append(last / seconds)
            raw_seconds, raw_progress = await raw_round(
                bootstrap, f"bench-raw-{suffix}-{round_}", envelopes
            )
            raw_rates.append(len(envelopes) / raw_seconds)
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
            lambda: relay_round(relay, last), context.work_dir / f"relay-{suffix}.pyisession"
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
        f"events/s over {rounds} rounds; ratio per round "
        f"{stats.paired_ratios(relay_rates, raw_rates)}"
    )
    return measurement, progress, f"{spread}. Profile of the relay: {profiling.summary(session)}"


async def _run(context: BenchContext) -> ScenarioResult:
    events, rounds = (60, 1) if context.quick else (3000, 3)
    result = ScenarioResult("Relay: event store → broker")
    progress: dict[str, Progress] = {}
    kinds = ["SQLite"]
    if stack.postgres_available(context.postgres_url):
        kinds.append("PostgreSQL")
    else:
        result.notes.append(f"PostgreSQL at {context.postgres_url} unreachable: not measured")
    for kind in kinds:
        with orders_store(context, kind) as settings:
            measurement, points, note = await measure_store(context, settings, kind, events, rounds)
        result.measurements.append(measurement)
        result.notes.append(note)
        progress.update(points)
    result.notes.append(
        "The relay's extra work per batch, which the raw producer skips: one SELECT of the "
        "next notifications, decoding each stored event and mapping it to its contract "
        "(pydantic), and one INSERT of the tracking position after the acks."
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


def run(context: BenchContext) -> ScenarioResult:
    return asyncio.run(_run(context))
