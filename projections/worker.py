"""The projections worker (one process): ``faust -A projections.worker:app worker --without-web``.

Thin entry point: Faust consumes the topics and hands batches of raw messages to the
:class:`~kernel.projection_runtime.ProjectionRunner` of each projection.
"""

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from pymongo import AsyncMongoClient

from kernel import health as process_health
from kernel import tracing
from kernel.kafka import reliable_producer, stop_producer
from kernel.messaging import ConsumedMessage, DeadLetters
from kernel.projection import Projection
from kernel.projection_catalog import ProjectionVersionMismatch
from kernel.projection_runtime import ProjectionRunner
from kernel.streams import faust_app, handle_batches, retry_until_done
from projections.registry import PROJECTIONS
from projections.settings import ProjectionSettings

log = logging.getLogger(__name__)
settings = ProjectionSettings()
tracing.configure_tracing("projections")
app = faust_app(settings.projections_group_id, settings, settings.projections_data_dir)


async def handle(runner: ProjectionRunner, batch: list[ConsumedMessage]) -> None:
    await runner.handle(batch)


def register(projection: Projection) -> None:
    topics = app.topic(
        *projection.topics,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka_topic_partitions,
    )

    async def project(stream: Any) -> None:
        client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongodb_url)
        producer = reliable_producer(settings.kafka_bootstrap_servers)
        await producer.start()
        stopping = asyncio.Event()
        health = process_health.current()
        health.add_check("broker", lambda: process_health.broker_check(producer))
        health.add_check("mongodb", process_health.mongo_check(client[settings.mongodb_database]))
        try:
            runner = ProjectionRunner(
                projection,
                client[settings.mongodb_database],
                DeadLetters(producer, consumer=f"projections.{projection.name}"),
            )
            try:
                await runner.prepare()

                async def project_batch(events: Sequence[Any]) -> None:
                    batch = [ConsumedMessage.of(event) for event in events]
                    await retry_until_done(
                        partial(handle, runner, batch), f"projection {projection.name}", stopping
                    )

                await handle_batches(
                    stream,
                    settings.projection_batch_size,
                    project_batch,
                    name=f"projections.{projection.name}",
                )
            except ProjectionVersionMismatch as error:
                # Another version's collection is live (or this one was never rebuilt):
                # stop the worker rather than mix two versions' logic in one collection.
                log.critical("%s", error)
                await app.crash(error)
        finally:
            stopping.set()
            await stop_producer(producer)
            await client.close()

    project.__name__ = f"project_{projection.name}"
    app.agent(topics, name=f"projections.{projection.name}")(project)


for projection in PROJECTIONS:
    register(projection)
