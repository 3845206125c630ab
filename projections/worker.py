"""The projections worker (one process): ``faust -A projections.worker:app worker --without-web``.

Thin entry point: Faust consumes the topics and hands batches of raw messages to the
:class:`~projections.runtime.ProjectionRunner` of each projection.
"""

import asyncio
from pathlib import Path
from typing import Any

import faust
from pymongo import AsyncMongoClient

from projections.dead_letters import ConsumedMessage, DeadLetters
from projections.orders import ORDERS
from projections.projection import Projection
from projections.runtime import ProjectionRunner, handle_until_done
from projections.settings import ProjectionSettings
from write_side.kernel.kafka import reliable_producer, stop_producer

settings = ProjectionSettings()
Path(settings.projections_data_dir).mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.projections_group_id,
    broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=settings.kafka_topic_partitions,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    store="memory://",
    datadir=f"{settings.projections_data_dir}/{{conf.name}}",
    web_enabled=False,
)


def consumed(event: Any) -> ConsumedMessage:
    message = event.message
    return ConsumedMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple((k, bytes(v)) for k, v in (message.headers or ())),
    )


def register(projection: Projection) -> None:
    topic = app.topic(
        projection.topic,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka_topic_partitions,
    )

    async def project(stream: Any) -> None:
        client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongodb_url)
        producer = reliable_producer(settings.kafka_bootstrap_servers)
        await producer.start()
        stopping = asyncio.Event()
        try:
            runner = ProjectionRunner(
                projection,
                client[settings.mongodb_database],
                DeadLetters(producer, consumer=f"projections.{projection.name}"),
            )
            await runner.prepare()
            async for events in stream.take_events(
                settings.projection_batch_size, within=settings.projection_batch_within
            ):
                await handle_until_done(runner, [consumed(e) for e in events], stopping)
        finally:
            stopping.set()
            await stop_producer(producer)
            await client.close()

    project.__name__ = f"project_{projection.name}"
    app.agent(topic, name=f"projections.{projection.name}")(project)


register(ORDERS)
