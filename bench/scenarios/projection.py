"""projection: events/s from the broker into MongoDB, beside a raw bulk_write.

The orders projection is fed placed-then-approved orders three ways: the runtime's
`ProjectionRunner.handle` given 500-message batches in-process (decode, validate, one
find of the documents it did not write last, apply, one bulk write, one progress
write per batch); the same runner fed from
the broker by a bare aiokafka consumer; and the real Faust worker process
(`projections.worker`) reading them from the broker. The baseline writes the
very same documents, batch by batch, with one bare `bulk_write` of upserts to the same
server, into a collection with the same indexes: the limit of the store. Each round runs
the runner, the raw baseline, then the worker (a fresh broker and process); each writes
to a fresh database. The worker is profiled in a separate run, never while measured.
"""

import asyncio
import time
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient, ReplaceOne

from bench import charts, profiling, stack, stats
from bench.scenario import BenchContext, Measurement, ScenarioResult
from contracts import orders as contract
from contracts.envelope import Envelope, event_id_for
from contracts.registry import decode_envelope, parse_data
from devstack import processes
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from kernel.messaging import ConsumedMessage, DeadLetters
from kernel.projection import Document
from kernel.projection_runtime import PROGRESS_COLLECTION, ProjectionRunner
from projections.orders import ORDERS

BATCH_SIZE = 500  # PROJECTION_BATCH_SIZE's default
TARGET_RATIO = 0.8  # the live path's throughput against the raw bulk_write (issue 7)
PARTITIONS = 4
ITEMS = [contract.LineItem(menu_item_id="pizza", quantity=2, unit_price_cents=1250)]
Progress = list[tuple[float, int]]
Client = AsyncMongoClient[dict[str, Any]]


def order_events(orders: int) -> list[Envelope]:
    """`orders` OrderCreated, then each order's OrderApproved: 2 × orders envelopes."""
    ids = [str(uuid.uuid4()) for _ in range(orders)]
    now = datetime.now(UTC)
    created = [
        contract.OrderCreated(
            order_id=order_id,
            customer_id=f"customer-{i % 50}",
            restaurant_id="restaurant-1",
            delivery_address=contract.DeliveryAddress(street="1 Main St"),
            line_items=ITEMS,
            total_cents=2500,
        )
        for i, order_id in enumerate(ids)
    ]
    approved = [contract.OrderApproved(order_id=order_id) for order_id in ids]
    events = [(e, 1) for e in created] + [(e, 2) for e in approved]
    return [
        Envelope(
            id=event_id_for("orders", event.order_id, version),
            type=event.type(),
            source="orders",
            subject=event.order_id,
            time=now,
            correlationid="bench",
            causationid="bench",
            sequence=position,
            aggregateversion=version,
            data=event.model_dump(mode="json"),
        )
        for position, (event, version) in enumerate(events, start=1)
    ]


def partition_of(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


def consumed_batches(envelopes: list[Envelope]) -> list[list[ConsumedMessage]]:
    """The envelopes as a consumer would get them, in batches of BATCH_SIZE."""
    offsets = [0] * PARTITIONS
    messages = []
    for envelope in envelopes:
        partition = partition_of(envelope.subject)
        messages.append(
            ConsumedMessage(
                "orders",
                partition,
                offsets[partition],
                envelope.subject.encode(),
                envelope.to_bytes(),
                tuple(envelope.kafka_headers()),
            )
        )
        offsets[partition] += 1
    return [messages[i : i + BATCH_SIZE] for i in range(0, len(messages), BATCH_SIZE)]


def documents_per_batch(batches: list[list[ConsumedMessage]]) -> list[list[Document]]:
    """The documents the runner writes for each batch (same shape, bookkeeping included)."""
    state: dict[str, Document] = {}
    written = []
    for batch in batches:
        changed: dict[str, Document] = {}
        for message in batch:
            envelope = decode_envelope(message.value)
            event = parse_data(envelope, ORDERS.accepts)
            key = ORDERS.key(envelope, event)
            current = state.get(key)
            new = ORDERS.apply(current, envelope, event)
            applied = dict(current.get("_applied", {})) if current else {}
            applied[f"{envelope.source}/{envelope.subject}"] = envelope.aggregateversion
            new.update(_id=key, _applied=applied, _rev=(current or {}).get("_rev", 0) + 1)
            state[key] = changed[key] = new
        written.append(list(changed.values()))
    return written


async def runner_round(
    client: Client, batches: list[list[ConsumedMessage]], dead_letters: DeadLetters
) -> tuple[float, Progress]:
    database = client[f"bench_{uuid.uuid4().hex[:8]}"]
    runner = ProjectionRunner(ORDERS, database, dead_letters)
    await runner.prepare()
    progress: Progress = [(0.0, 0)]
    start = time.perf_counter()
    for batch in batches:
        await runner.handle(batch)
        progress.append((time.perf_counter() - start, progress[-1][1] + len(batch)))
    seconds = time.perf_counter() - start
    await client.drop_database(database.name)
    return seconds, progress


async def raw_round(
    client: Client, documents: list[list[Document]], sizes: list[int]
) -> tuple[float, Progress]:
    database = client[f"bench_{uuid.uuid4().hex[:8]}"]
    collection = database[ORDERS.collection]
    await collection.create_indexes(ORDERS.indexes)
    progress: Progress = [(0.0, 0)]
    start = time.perf_counter()
    for batch, size in zip(documents, sizes, strict=True):
        operations = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in batch]
        await collection.bulk_write(operations, ordered=False)
        progress.append((time.perf_counter() - start, progress[-1][1] + size))
    seconds = time.perf_counter() - start
    await client.drop_database(database.name)
    return seconds, progress


async def consumer_fed_rate(
    context: BenchContext, envelopes: list[Envelope], client: Client, dead_letters: DeadLetters
) -> tuple[float, int]:
    """Events/s of `ProjectionRunner` fed by a bare aiokafka consumer from a topic already
    holding the events (the runtime on the live path, without Faust around it), and the
    documents it wrote."""
    topic = f"bench-projection-{uuid.uuid4().hex[:8]}"
    await ensure_topics(context.kafka_bootstrap, {topic: PARTITIONS})
    producer = reliable_producer(context.kafka_bootstrap)
    await producer.start()
    try:
        for envelope in envelopes:
            await producer.send(
                topic,
                envelope.to_bytes(),
                key=envelope.subject.encode(),
                headers=envelope.kafka_headers(),
            )
    finally:
        await stop_producer(producer)
    database = client[f"bench_{uuid.uuid4().hex[:8]}"]
    runner = ProjectionRunner(ORDERS, database, dead_letters)
    await runner.prepare()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=context.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        start, done, written = time.perf_counter(), 0, 0
        while done < len(envelopes):
            fetched = await consumer.getmany(timeout_ms=1000, max_records=BATCH_SIZE)
            batch = [
                ConsumedMessage(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers))
                for records in fetched.values()
                for r in records
            ]
            if batch:
                written += (await runner.handle(batch)).written
                done += len(batch)
        seconds = time.perf_counter() - start
    finally:
        await consumer.stop()
    await client.drop_database(database.name)
    return len(envelopes) / seconds, written


async def faust_worker_rate(
    context: BenchContext, envelopes: list[Envelope], client: Client, profile: Path | None = None
) -> tuple[float, float | None]:
    """Events/s of the real worker process, from the first send to the last event applied
    (after a warm-up event, so the worker's start and partition assignment are left out),
    and the CPU the process used meanwhile, in cores (None where /proc is missing).

    The end is the worker's own record of its last batch (``updated_at`` of its progress
    documents, same clock): the bench polls for it only every 0.2 s, so that it neither
    loads the store it measures nor adds its polling interval to the time.

    With `profile`, the process runs under pyinstrument, which saves its session there."""
    database = f"bench_{uuid.uuid4().hex[:8]}"
    with stack.system_broker(context.work_dir / f"kafka-{database}") as broker:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
            "MONGODB_URL": context.mongo_url,
            "MONGODB_DATABASE": database,
            "PROJECTIONS_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
            "PROJECTIONS_DATA_DIR": str(context.work_dir / "faust"),
        }
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all", linger_ms=5
        )
        await producer.start()
        with stack.System(env, context.work_dir) as system:
            worker = system.start(
                processes.projections_worker(env, context.work_dir, profile=profile)
            )
            progress = client[database][PROGRESS_COLLECTION]
            try:
                warm_up = order_events(1)[0]
                await producer.send_and_wait(
                    "orders", warm_up.to_bytes(), key=warm_up.subject.encode()
                )
                await _until(lambda: progress.count_documents({}), system, timeout=120)
                start, cpu_at_start = datetime.now(UTC), worker.cpu_seconds()
                acks = [
                    await producer.send(
                        "orders",
                        e.to_bytes(),
                        key=e.subject.encode(),
                        headers=e.kafka_headers(),
                    )
                    for e in envelopes
                ]
                last: dict[int, int] = {}
                for ack in acks:
                    record = await ack
                    last[record.partition] = max(last.get(record.partition, -1), record.offset)

                ended: list[datetime] = []

                async def caught_up() -> bool:
                    documents = await progress.find(
                        {"projection": "orders", "topic": "orders"}
                    ).to_list()
                    reached = {d["partition"]: d["offset"] for d in documents}
                    if any(reached.get(p, -1) < offset for p, offset in last.items()):
                        return False
                    ended.append(max(d["updated_at"].replace(tzinfo=UTC) for d in documents))
                    return True

                await _until(caught_up, system, timeout=300, interval=0.2)
                cpu_at_end = worker.cpu_seconds()
                seconds = (ended[0] - start).total_seconds()
            finally:
                await producer.stop()
        await client.drop_database(database)
    cores = None
    if cpu_at_start is not None and cpu_at_end is not None:
        cores = (cpu_at_end - cpu_at_start) / seconds
    return len(envelopes) / seconds, cores


async def _until(
    predicate: Any, system: stack.System, timeout: float, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        system.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"projection worker did not catch up\n{system.logs()}")
        await asyncio.sleep(interval)


async def run(context: BenchContext) -> ScenarioResult:
    orders, rounds = (100, 1) if context.quick else (1500, 3)
    envelopes = order_events(orders)
    batches = consumed_batches(envelopes)
    documents = documents_per_batch(batches)
    sizes = [len(batch) for batch in batches]
    result = ScenarioResult("Projection: broker → MongoDB")
    client: Client = AsyncMongoClient(context.mongo_url)
    producer = reliable_producer(context.kafka_bootstrap)
    await ensure_topics(context.kafka_bootstrap, {"orders.dead-letters": 1})
    await producer.start()
    dead_letters = DeadLetters(producer, consumer="bench")
    try:
        runner_rates, raw_rates, worker_rates, charted = [], [], [], {}
        worker_cores: list[float] = []
        for round_ in range(rounds):
            seconds, runner_progress = await runner_round(client, batches, dead_letters)
            runner_rates.append(len(envelopes) / seconds)
            raw_seconds, raw_progress = await raw_round(client, documents, sizes)
            raw_rates.append(len(envelopes) / raw_seconds)
            worker_rate, cores = await faust_worker_rate(context, envelopes, client)
            worker_rates.append(worker_rate)
            worker_cores += [cores * 100] if cores is not None else []
            if round_ == 0:
                charted = {"ProjectionRunner": runner_progress, "raw bulk_write": raw_progress}
        _, session = await profiling.profiled(
            lambda: runner_round(client, batches, dead_letters),
            context.work_dir / "projection-runner.pyisession",
        )
        consumer_rate, consumer_written = await consumer_fed_rate(
            context, envelopes, client, dead_letters
        )
        worker_profile = context.work_dir / "projection-worker.pyisession"
        profiled_rate, _ = await faust_worker_rate(
            context, envelopes, client, profile=worker_profile
        )
    finally:
        await stop_producer(producer)
        await client.close()
    baseline = stats.median(raw_rates)
    what = (
        f"{len(envelopes)} events ({orders} orders created, then approved), batches of {BATCH_SIZE}"
    )
    result.measurements += [
        Measurement(f"{how}, {what}", rate, "events/s", "raw bulk_write", baseline)
        for how, rate in (
            ("ProjectionRunner.handle in-process", stats.median(runner_rates)),
            ("ProjectionRunner fed by a bare aiokafka consumer", consumer_rate),
            ("Faust worker process fed from the broker", stats.median(worker_rates)),
        )
    ]
    for measurement in result.measurements:
        ratio = measurement.ratio or 0.0
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        result.notes.append(
            f"{measurement.what.split(',')[0]}: {ratio:.2f} of the raw baseline, which "
            f"{verdict} the target of {TARGET_RATIO:.2f}."
        )
    cpu = (
        f"; the worker process used {stats.spread(worker_cores)} % of a core while measured"
        if worker_cores
        else ""
    )
    result.notes += [
        (
            f"Runner {stats.spread(runner_rates)} events/s, raw bulk_write "
            f"{stats.spread(raw_rates)} events/s over {rounds} rounds (ratio per round "
            f"{stats.paired_ratios(runner_rates, raw_rates)}); the bare consumer ran once, "
            "on a topic already holding the events, and wrote "
            f"{consumer_written:,} documents where the runner and the baseline write "
            f"{sum(len(batch) for batch in documents):,} (its batches are what each fetch "
            "brings, partition by partition: an order's creation and approval may share one, "
            "which saves a write)."
        ),
        (
            f"Faust worker {stats.spread(worker_rates)} events/s over {rounds} rounds, each "
            "a fresh worker process and broker, timed from the first send to the last event "
            "applied, after a warm-up event (ratio to the same round's raw bulk_write "
            f"{stats.paired_ratios(worker_rates, raw_rates)}){cpu}."
        ),
        f"Profile of `ProjectionRunner.handle`: {profiling.summary(session)}",
        (
            f"Profile of the Faust worker process (a separate run, at {profiled_rate:,.0f} "
            "events/s under the profiler; its main thread only, not aiokafka's consumer "
            f"thread): {profiling.summary(profiling.load(worker_profile))}"
        ),
    ]
    result.charts.append(
        charts.throughput_over_time(
            context.image_dir / "projection-throughput.png",
            "Projection runner vs raw bulk_write (first round)",
            charted,
            "events/s",
        )
    )
    return result
