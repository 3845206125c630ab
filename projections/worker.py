"""The projections worker (one process): ``faust -A projections.worker:app worker --without-web``.

Thin entry point: Faust consumes the topics and hands batches of raw messages to the
:class:`~projections.runtime.ProjectionRunner` of each projection.
"""

import asyncio
from functools import partial
from typing import Any

from pymongo import AsyncMongoClient

from projections.projection import Projection
from projections.runtime import ProjectionRunner
from projections.settings import ProjectionSettings
from write_side.kernel.kafka import reliable_producer, stop_producer
from write_side.kernel.messaging import ConsumedMessage, DeadLetters
from write_side.kernel.streams import faust_app, retry_until_done

# cqrs-reference-saga: begin
# isort: split
from projections.orders import ORDERS
from projections.tickets import TICKETS

# isort: split
# cqrs-reference-saga: end
# cqrs-scaffold: projection imports

settings = ProjectionSettings()
app = faust_app(settings.projections_group_id, settings, settings.projections_data_dir)


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
                batch = [ConsumedMessage.of(event) for event in events]
                await retry_until_done(
                    partial(runner.handle, batch), f"projection {projection.name}", stopping
                )
        finally:
            stopping.set()
            await stop_producer(producer)
            await client.close()

    project.__name__ = f"project_{projection.name}"
    app.agent(topics, name=f"projections.{projection.name}")(project)


# cqrs-reference-saga: begin
register(ORDERS)
register(TICKETS)
# cqrs-reference-saga: end
# cqrs-scaffold: projections
