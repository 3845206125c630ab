"""The local broker's restart keeps what it acknowledged (`KafkaBroker.stop`).

noida-db 0.2.3, stopped with SIGTERM alone, still acknowledges produce requests while it
exits and saves its data before the last of them: after the restart the last batches
it acknowledged are gone (20 to 40 messages of a steady stream, measured), and so are
its idempotent producers' sequence numbers (every later send then fails with
OutOfOrderSequenceNumber). `KafkaBroker.stop` first asks the broker to stop its Kafka
service (`noida-db stop kafka`), which saves everything, then SIGTERMs it. This test
restarts the broker under a steady stream of sends and wants every acknowledged message
at its offset afterwards, and no send failed; with a SIGTERM alone it fails.
"""

import asyncio
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from devstack.servers import KafkaBroker
from kernel.kafka import ensure_topics, reliable_producer, stop_producer
from tests.integration.kafka_reading import read_all
from tests.support import wait_for_async

TOPIC = "restarted"
PARTITIONS = 4
RESTARTS = 3
SENT_BETWEEN_RESTARTS = 2000
"""A SIGTERM alone loses messages only if it comes while the broker still acknowledges
and saving takes a while: with some data, three restarts catch it."""
PADDING = b"x" * 200


async def test_the_broker_restarted_under_a_stream_of_sends_keeps_every_acknowledged_message(
    tmp_path: Path,
) -> None:
    broker = KafkaBroker(tmp_path / "kafka").start()
    try:
        await ensure_topics(broker.bootstrap, {TOPIC: PARTITIONS})
        acknowledged: dict[TopicPartition, dict[int, bytes]] = {}
        failed: list[str] = []
        stopping = asyncio.Event()
        producer = reliable_producer(broker.bootstrap, linger_ms=0)
        await producer.start()

        async def send_steadily() -> None:
            number = 0
            while not stopping.is_set():
                sent = []
                for _ in range(20):  # a batch in flight at any moment
                    value = str(number).encode() + PADDING
                    sent.append((value, await producer.send(TOPIC, value, key=value)))
                    number += 1
                for value, ack in sent:
                    try:
                        metadata = await ack
                    except KafkaError as error:
                        failed.append(f"{int(value.rstrip(PADDING))}: {error!r}")
                        continue
                    partition = TopicPartition(TOPIC, metadata.partition)
                    acknowledged.setdefault(partition, {})[metadata.offset] = value
                await asyncio.sleep(0.005)

        def count() -> int:
            return sum(len(offsets) for offsets in acknowledged.values())

        async def some_more_sent() -> None:
            before = count()
            await wait_for_async(
                lambda: failed or count() >= before + SENT_BETWEEN_RESTARTS, timeout=60
            )

        sending = asyncio.create_task(send_steadily())
        try:
            for _ in range(RESTARTS):
                await some_more_sent()
                if failed:  # a restart that lost the producer's state: they fail for good
                    break
                await asyncio.to_thread(broker.stop)  # while sends go on
                await asyncio.to_thread(broker.start)  # same port, same data
            await some_more_sent()
        finally:
            stopping.set()
            await sending
            await stop_producer(producer)

        on_the_topic = {
            (TopicPartition(TOPIC, record.partition), record.offset): record.value
            for record in await read_all(broker.bootstrap, TOPIC)
        }
        lost = [
            (partition.partition, offset, value)
            for partition, offsets in acknowledged.items()
            for offset, value in offsets.items()
            if on_the_topic.get((partition, offset)) != value
        ]
        assert not lost, f"{len(lost)} of {count()} acknowledged messages lost: {lost[:10]}"
        assert not failed, f"{len(failed)} sends failed after the restart: {failed[:3]}"
    finally:
        broker.stop()
