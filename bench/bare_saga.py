"""The saga's bare baseline: its five hops as bare aiokafka consumers, one process each.

OrderCreated → ConsumerVerified → TicketCreated → CardAuthorized → OrderApproved: the
bench produces an order's first message to topic 0; hop `i` (1 to 4) consumes topic
`i - 1`, takes whatever a fetch returned, writes the batch's steps with ONE plain
INSERT into its own store (a SQLite file per hop, or a table per hop in a PostgreSQL
schema) and commits, then produces each message to topic `i` and waits for the acks.
Hop 5 consumes topic 4 and marks the batch's orders APPROVED in MongoDB with one
bulk upsert, where the bench's watcher sees them as it sees the saga's read model.

No framework, no envelope validation, no inbox, no relay: the Kafka topics carry the
messages straight from hop to hop. Like the system's consumers, each paces empty
fetches (the local broker answers them at once).

Run one hop: ``python -m bench.bare_saga --hop 2 --bootstrap HOST:PORT --topics
t0,t1,t2,t3,t4 --sqlite DIR`` (or ``--postgres URL --schema S``; hop 5 needs
``--mongo-url`` and ``--mongo-database``).
"""

import argparse
import asyncio
import contextlib
import json
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient, UpdateOne

from bench.stack import System
from devstack import processes
from devstack.servers import KafkaBroker, run_sync
from kernel.kafka import ensure_topics, pace_empty_fetches

HOPS = 5
MAX_RECORDS = 5000  # per fetch taken: far above what one fetch brings here


class StepStore(Protocol):
    def insert(self, order_ids: list[str]) -> None: ...

    def close(self) -> None: ...


class SqliteSteps:
    """A SQLite file of the hop's own, in WAL mode as the system's stores."""

    def __init__(self, path: Path):
        self.connection = sqlite3.connect(path, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS steps (order_id TEXT PRIMARY KEY, at REAL)"
        )
        self.connection.commit()

    def insert(self, order_ids: list[str]) -> None:
        now = time.time()
        values = ", ".join("(?, ?)" for _ in order_ids)
        parameters = [value for order_id in order_ids for value in (order_id, now)]
        self.connection.execute(f"INSERT INTO steps (order_id, at) VALUES {values}", parameters)
        self.connection.commit()

    def close(self) -> None:
        self.connection.close()


class PostgresSteps:
    """A table of the hop's own in the run's schema."""

    def __init__(self, url: str, table: str):
        self.table = table
        self.connection = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        self.connection.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (order_id TEXT PRIMARY KEY, at DOUBLE PRECISION)"
        )
        self.connection.commit()

    def insert(self, order_ids: list[str]) -> None:
        now = time.time()
        values = ", ".join("(%s, %s)" for _ in order_ids)
        parameters = [value for order_id in order_ids for value in (order_id, now)]
        self.connection.execute(
            f"INSERT INTO {self.table} (order_id, at) VALUES {values}",
            parameters,
        )
        self.connection.commit()

    def close(self) -> None:
        self.connection.close()


async def run_hop(args: argparse.Namespace) -> None:
    pace_empty_fetches()
    topics: list[str] = args.topics.split(",")
    source = topics[args.hop - 1]
    target = topics[args.hop] if args.hop < HOPS else None
    store: StepStore = (
        PostgresSteps(args.postgres, f"{args.schema}.hop{args.hop}")
        if args.postgres
        else SqliteSteps(Path(args.sqlite) / f"hop{args.hop}.db")
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap, enable_auto_commit=False, group_id=None
    )
    # As the system's producers (kernel.kafka.reliable_producer).
    producer = (
        AIOKafkaProducer(
            bootstrap_servers=args.bootstrap, enable_idempotence=True, acks="all", linger_ms=5
        )
        if target is not None
        else None
    )
    mongo: AsyncMongoClient[dict[str, Any]] | None = None
    if target is None:
        mongo = AsyncMongoClient(args.mongo_url)
    await consumer.start()
    if producer is not None:
        await producer.start()
    partitions = [TopicPartition(source, p) for p in range(args.partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    try:
        while not stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            records = [record for batch in fetched.values() for record in batch]
            if not records:
                continue
            order_ids = [json.loads(record.value or b"{}")["order_id"] for record in records]
            await asyncio.to_thread(store.insert, order_ids)
            if mongo is not None:
                orders = mongo[args.mongo_database]["orders"]
                await orders.bulk_write(
                    [
                        UpdateOne({"_id": order_id}, {"$set": {"status": "APPROVED"}}, upsert=True)
                        for order_id in order_ids
                    ],
                    ordered=False,
                )
                continue
            assert producer is not None and target is not None
            acks = [
                await producer.send(target, value=record.value, key=record.key)
                for record in records
            ]
            await asyncio.gather(*acks)
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
        if mongo is not None:
            await mongo.close()
        store.close()


def topic_names() -> list[str]:
    prefix = f"bare-{uuid.uuid4().hex[:6]}"
    return [f"{prefix}-{i}" for i in range(HOPS)]


@contextlib.contextmanager
def bare_pipeline(
    work: Path,
    system_env: dict[str, str],
    *,
    partitions: int,
    mongo_url: str,
    mongo_database: str,
    postgres: tuple[str, str] | None = None,
) -> Iterator[tuple[KafkaBroker, list[str], list[processes.Process]]]:
    """A broker of its own, the five topics and the five hop processes (stopped by PID
    on exit); `postgres` is (url, schema), else each hop writes a SQLite file in `work`."""
    topics = topic_names()
    with KafkaBroker(work / "kafka") as broker:
        run_sync(lambda: ensure_topics(broker.bootstrap, dict.fromkeys(topics, partitions)))
        store = ["--postgres", postgres[0], "--schema", postgres[1]] if postgres else []
        with System(system_env, work) as system:
            for hop in range(1, HOPS + 1):
                argv = processes.python_module(
                    "bench.bare_saga",
                    "--hop", str(hop),
                    "--bootstrap", broker.bootstrap,
                    "--topics", ",".join(topics),
                    "--partitions", str(partitions),
                    "--mongo-url", mongo_url,
                    "--mongo-database", mongo_database,
                    *(store or ["--sqlite", str(work)]),
                )  # fmt: skip
                system.start(processes.Process(f"bare-hop{hop}", argv, system_env, work))
            yield broker, topics, system.running
            system.check_alive()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_saga")
    parser.add_argument("--hop", type=int, required=True, choices=range(1, HOPS + 1))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="the five topics, comma-separated")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--sqlite", help="directory of the hops' SQLite files")
    parser.add_argument("--postgres", help="PostgreSQL URL")
    parser.add_argument("--schema", default="public")
    parser.add_argument("--mongo-url")
    parser.add_argument("--mongo-database")
    return parser


def main() -> None:
    asyncio.run(run_hop(parser().parse_args()))


if __name__ == "__main__":
    main()
