"""Where the pipeline stands, sampled: each store's head and relay position, each topic
partition's end offset and what each consumer group has committed of it.

A sample taken while the broker is away has no offsets (`None`); the clients are made
again at the next sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.chaos.stores import Stores
from bench.chaos.system import GROUP_TOPICS, PARTITIONS, SERVICES

log = logging.getLogger("chaos")

KAFKA_TIMEOUT = 3.0  # seconds for one sample's requests


@dataclass
class Sample:
    at: float  # time.monotonic()
    heads: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)  # relays', by service
    ends: dict[TopicPartition, int] | None = None
    committed: dict[str, dict[TopicPartition, int]] | None = None  # by group

    def relay_lag(self, service: str) -> int:
        return self.heads[service] - self.positions[service]

    def group_lag(self, group: str) -> dict[TopicPartition, int] | None:
        """Messages not yet committed by the group, per partition it reads (None: the
        broker did not answer)."""
        if self.ends is None or self.committed is None:
            return None
        committed = self.committed.get(group, {})
        return {
            tp: end - max(committed.get(tp, 0), 0)
            for tp, end in self.ends.items()
            if tp.topic in GROUP_TOPICS[group]
        }

    def lags(self) -> dict[str, int] | None:
        """Every lag by name (`orders relay`, `kitchen-saga group`); None without offsets."""
        found = {f"{s} relay": self.relay_lag(s) for s in SERVICES}
        for group in GROUP_TOPICS:
            lag = self.group_lag(group)
            if lag is None:
                return None
            found[f"{group} group"] = sum(lag.values())
        return found

    def settled(self) -> bool:
        lags = self.lags()
        return lags is not None and not any(lags.values())


class Observer:
    """Takes samples of one round's system."""

    def __init__(self, stores: Stores, bootstrap: str):
        self.stores = stores
        self.bootstrap = bootstrap
        self.partitions = [TopicPartition(t, p) for t in SERVICES for p in range(PARTITIONS)]
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None

    async def sample(self) -> Sample:
        sample = Sample(time.monotonic())
        sample.heads, sample.positions = await asyncio.to_thread(self._store_positions)
        try:
            async with asyncio.timeout(KAFKA_TIMEOUT):
                sample.ends, sample.committed = await self._offsets()
        except (KafkaError, OSError, TimeoutError) as error:
            log.debug("no offsets: %r", error)
            await self.close()
        return sample

    def _store_positions(self) -> tuple[dict[str, int], dict[str, int]]:
        heads = {s: self.stores.head(s) for s in SERVICES}
        positions = {s: self.stores.relay_position(s) for s in SERVICES}
        return heads, positions

    async def _offsets(
        self,
    ) -> tuple[dict[TopicPartition, int], dict[str, dict[TopicPartition, int]]]:
        if self.admin is None or self.consumer is None:
            self.admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=2000
            )
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, request_timeout_ms=2000
            )
            await self.admin.start()
            await self.consumer.start()
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(self.partitions)
        committed = {}
        for group in GROUP_TOPICS:
            offsets = await self.admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items()}
        return ends, committed

    async def close(self) -> None:
        admin, consumer = self.admin, self.consumer
        self.admin = self.consumer = None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
