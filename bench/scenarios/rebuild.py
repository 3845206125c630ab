"""Rebuild throughput: `cqrs replay` of the orders read model from the event stores,
beside a raw ``bulk_write`` of the same documents to the same MongoDB server.

The workload: sagas of every outcome written through the four services' Applications
(SQLite stores). The rebuild is timed end to end (reading the stores, decoding,
applying, bulk writes, checkpoints; no cut-over). The baseline writes the documents
the rebuild produced, as the same upserts into a collection with the same indexes, in
batches of the same size: what the server can take with nothing else to do. The ratio
is rebuild documents/s over raw documents/s (each final document once).

``python -m bench.scenarios.rebuild [--quick]`` starts its own servers and prints the
result.
"""

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

from pymongo import AsyncMongoClient, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase

from bench.saga_stores import SERVICES, Workload
from bench.scenario import BenchContext, Measurement, ScenarioResult
from kernel.kafka import ensure_topics
from kernel.replay import Replay, ReplayOptions, ReplaySummary
from operations.replay import store_logs
from projections.orders import ORDERS

SAGAS = 1500  # about 7,500 events and 1,500 documents
QUICK_SAGAS = 300
ROUNDS = 2  # rebuild and baseline alternate; the best of each counts (a noisy machine)
BATCH_SIZE = 2000  # events per rebuild batch (the CLI's default)


async def _rebuild(
    database: AsyncDatabase[Any], bootstrap: str, env: dict[str, str]
) -> ReplaySummary:
    with mock.patch.dict(os.environ, env), store_logs(set(SERVICES)) as logs:
        replay = Replay(
            ORDERS,
            database,
            bootstrap,
            logs,
            ReplayOptions(source="stores", switch=False, batch_size=BATCH_SIZE),
        )
        return await replay.run()


async def _raw_bulk_write(database: AsyncDatabase[Any], documents: list[dict[str, Any]]) -> float:
    """Seconds to upsert ``documents`` into a fresh collection with the same indexes."""
    target = database[f"raw_{uuid.uuid4().hex[:8]}"]
    await target.create_indexes(ORDERS.indexes)
    batch = max(1, len(documents) * BATCH_SIZE // max(1, _events_hint(documents)))
    started = time.perf_counter()
    for start in range(0, len(documents), batch):
        chunk = documents[start : start + batch]
        await target.bulk_write(
            [ReplaceOne({"_id": d["_id"], "_rev": None}, d, upsert=True) for d in chunk],
            ordered=False,
        )
    seconds = time.perf_counter() - started
    await target.drop()
    return seconds


def _events_hint(documents: list[dict[str, Any]]) -> int:
    """Events that made these documents (timeline entries), to size baseline batches
    like the rebuild's (a batch of BATCH_SIZE events writes about that many documents)."""
    return sum(len(d.get("timeline", ())) for d in documents)


async def measure(context: BenchContext) -> ScenarioResult:
    sagas = QUICK_SAGAS if context.quick else SAGAS
    stores = context.work_dir / f"rebuild-{uuid.uuid4().hex[:8]}"
    stores.mkdir(parents=True)
    env = {f"{s.upper()}_DATABASE_URL": f"sqlite:///{stores}/{s}.db" for s in SERVICES}
    await ensure_topics(context.kafka_bootstrap, {t: 4 for t in SERVICES})
    workload = Workload(env, context.kafka_bootstrap)
    client: AsyncMongoClient[Any] = AsyncMongoClient(context.mongo_url)
    database = client[f"bench_rebuild_{uuid.uuid4().hex[:8]}"]
    rebuild_seconds, raw_seconds = [], []
    try:
        await workload.write(sagas)
        for _ in range(ROUNDS):
            summary = await _rebuild(database, context.kafka_bootstrap, env)
            rebuild_seconds.append(summary.seconds)
            documents = [
                {k: v for k, v in d.items() if k != "_rev"}
                async for d in database[summary.collection].find({})
            ]
            await database.drop_collection(summary.collection)
            raw_seconds.append(await _raw_bulk_write(database, documents))
    finally:
        workload.close()
        await client.drop_database(database.name)
        await client.close()
    rebuild_docs = len(documents) / min(rebuild_seconds)
    raw_docs = len(documents) / min(raw_seconds)
    return ScenarioResult(
        name="rebuild",
        measurements=[
            Measurement(
                what=f"orders read model from the event stores ({len(documents):,} orders, "
                f"{summary.events:,} events)",
                value=rebuild_docs,
                unit="documents/s",
                baseline_name="raw bulk_write of the same documents",
                baseline=raw_docs,
            ),
            Measurement(
                what="the same rebuild in events/s",
                value=summary.events / min(rebuild_seconds),
                unit="events/s",
            ),
        ],
        notes=[
            (
                f"batches of {BATCH_SIZE} events; the rebuild wrote {summary.written:,} "
                f"document versions for {len(documents):,} documents; best of {ROUNDS} "
                f"alternating runs (rebuild {', '.join(f'{s:.2f}' for s in rebuild_seconds)} s, "
                f"raw {', '.join(f'{s:.2f}' for s in raw_seconds)} s); SecantusDB (MongoDB wire)"
            )
        ],
    )


def run(context: BenchContext) -> ScenarioResult:
    return asyncio.run(measure(context))


def main() -> None:
    from devstack.servers import KafkaBroker, MongoServer, ensure_secantus_venv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller workload")
    args = parser.parse_args()
    ensure_secantus_venv()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        broker = KafkaBroker(work / "kafka").start()
        mongo = MongoServer(work / "mongo").start()
        try:
            result = run(
                BenchContext(
                    kafka_bootstrap=broker.bootstrap,
                    mongo_url=mongo.url,
                    postgres_url="",
                    work_dir=work,
                    image_dir=work,
                    quick=args.quick,
                )
            )
        finally:
            mongo.stop()
            broker.stop()
    print(f"## {result.name}")
    for m in result.measurements:
        line = f"- {m.what}: {m.value:,.0f} {m.unit}"
        if m.baseline is not None and m.ratio is not None:
            line += f"; {m.baseline_name}: {m.baseline:,.0f} {m.unit}; ratio {m.ratio:.2f}"
        print(line)
    for note in result.notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
