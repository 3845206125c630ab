"""Transaction-log tailing: a service's notification log → its Kafka topic, in order.

The relay is the only reader of the log. It reads the next notifications after its
tracked position, maps each domain event to a contract event, sends the whole batch,
waits for the broker's acks, and only then records the new position with
eventsourcing's tracking recorder. Killed at any moment, it resends at most the last
unacknowledged batch (consumers are idempotent) and never skips an event.

Gaps: the SQLAlchemy recorder serialises writers (an exclusive table lock on
PostgreSQL, a single writer on SQLite), so notification ids become visible in id
order; an id missing below a visible one belongs to a rolled-back transaction and will
never appear. See docs/adr/0003-relay-reads-the-notification-log.md.

Waiting: when the log has nothing new, the relay waits until its store announces a
commit (``write_side.kernel.wakeup``) or the poll interval has passed, whichever comes
first: ``watched_poll_interval`` while the watch is announcing commits, ``poll_interval``
when there is none. The announcement only wakes it sooner: what it publishes is always
what the SELECT after its position finds. Once a batch is acknowledged, the relay tells
consumers on this machine that its topic has new messages (``announce``; see
``write_side.kernel.kafka.FetchWakeups``), for a broker that does not hold empty fetches.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Collection
from typing import Any

from aiokafka import AIOKafkaProducer
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import ApplicationRecorder, Notification, Tracking, TrackingRecorder

from contracts.base import ContractEvent
from contracts.envelope import Envelope, event_id_for
from contracts.registry import check_also_publish, editions
from write_side.kernel.application import ServiceApplication
from write_side.kernel.kafka import (
    ensure_topics,
    fetch_wakeups,
    reliable_producer,
    stop_producer,
)
from write_side.kernel.settings import RelaySettings
from write_side.kernel.store import MetadataMapper
from write_side.kernel.wakeup import CommitWatch, commit_watch, is_active

log = logging.getLogger(__name__)

ContractMapping = Callable[[DomainEventProtocol[Any]], ContractEvent | None]
"""Maps a domain event to its public contract event; None keeps it private."""


class Relay:
    def __init__(
        self,
        *,
        source: str,
        topic: str,
        recorder: ApplicationRecorder,
        mapper: MetadataMapper,
        tracking: TrackingRecorder,
        producer: AIOKafkaProducer,
        to_contract: ContractMapping,
        batch_size: int = 500,
        poll_interval: float = 0.05,
        watched_poll_interval: float = 2.0,
        also_publish: Collection[str] = (),
        watch_commits: CommitWatch | None = None,
        announce: Callable[[str], object] | None = None,
    ):
        check_also_publish(also_publish)
        self.source = source
        self.topic = topic
        self.recorder = recorder
        self.mapper = mapper
        self.tracking = tracking
        self.producer = producer
        self.to_contract = to_contract
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.watched_poll_interval = watched_poll_interval
        self.also_publish = frozenset(also_publish)
        self.watch_commits = watch_commits
        self.announce = announce
        self.tracking_name = f"relay:{topic}"

    def position(self) -> int:
        """The last notification id the broker has acknowledged."""
        return self.tracking.max_tracking_id(self.tracking_name) or 0

    async def run(self, stopping: asyncio.Event) -> None:
        position = await asyncio.to_thread(self.position)
        log.info("relay %s starts after position %d", self.tracking_name, position)
        wake = asyncio.Event()
        helpers = [asyncio.create_task(self._wake_when_set(stopping, wake))]
        if self.watch_commits is not None:
            helpers.append(asyncio.create_task(self._watch_commits(self.watch_commits, wake)))
        try:
            while not stopping.is_set():
                wake.clear()  # before the SELECT: a commit after it sets it again
                position, read = await self.publish_next_batch(position)
                if read == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self.current_poll_interval())
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    def current_poll_interval(self) -> float:
        """How long to wait for a commit's announcement before looking all the same."""
        if is_active(self.watch_commits):
            return self.watched_poll_interval
        return self.poll_interval

    @staticmethod
    async def _wake_when_set(stopping: asyncio.Event, wake: asyncio.Event) -> None:
        await stopping.wait()
        wake.set()

    async def _watch_commits(self, watch: CommitWatch, wake: asyncio.Event) -> None:
        """Run the commit watch; if it fails, log it and go on polling without it."""
        try:
            await watch(wake)
        except Exception:
            log.exception("relay %s: commit watch failed; polling only", self.tracking_name)

    async def publish_next_batch(self, position: int) -> tuple[int, int]:
        """Publish the notifications after ``position``; return the new position and how
        many notifications were read (private events are read but not published)."""
        notifications = await asyncio.to_thread(
            self.recorder.select_notifications, position + 1, self.batch_size
        )
        if not notifications:
            return position, 0
        envelopes = [envelope for n in notifications for envelope in self.envelopes(n)]
        acks = [
            await self.producer.send(
                self.topic,
                value=envelope.to_bytes(),
                key=envelope.subject.encode(),
                headers=envelope.kafka_headers(),
            )
            for envelope in envelopes
        ]
        await asyncio.gather(*acks)  # raises if any send failed: position stays put
        if envelopes and self.announce is not None:
            self.announce(self.topic)
        new_position = notifications[-1].id
        await asyncio.to_thread(
            self.tracking.insert_tracking, Tracking(self.tracking_name, new_position)
        )
        return new_position, len(notifications)

    def envelopes(self, notification: Notification) -> list[Envelope]:
        return contract_envelopes(
            notification,
            source=self.source,
            mapper=self.mapper,
            to_contract=self.to_contract,
            also_publish=self.also_publish,
        )


def contract_envelopes(
    notification: Notification,
    *,
    source: str,
    mapper: MetadataMapper,
    to_contract: ContractMapping,
    also_publish: Collection[str] = (),
) -> list[Envelope]:
    """The messages a stored event is published as: none for a private event, one per
    major published (the current one, then those of ``also_publish``, newest first).

    Every copy has the same id, sequence and aggregate version: it is one event in
    several shapes, and consumers that read two of them keep the first. The relay
    publishes them; ``cqrs replay`` rebuilds read models from the current one.
    """
    domain_event = mapper.to_domain_event(notification)
    contract = to_contract(domain_event)
    if contract is None:
        return []
    metadata = mapper.metadata_of(notification)
    aggregate_id = str(notification.originator_id)
    event_id = event_id_for(source, aggregate_id, notification.originator_version)
    return [
        Envelope(
            id=event_id,
            type=edition.type(),
            source=source,
            subject=aggregate_id,
            time=domain_event.timestamp,  # type: ignore[attr-defined]  # every aggregate event has one
            correlationid=metadata.correlation_id if metadata else event_id,
            causationid=metadata.causation_id if metadata else event_id,
            sequence=notification.id,
            aggregateversion=notification.originator_version,
            data=edition.model_dump(mode="json"),
        )
        for edition in editions(contract, also_publish)
    ]


def contract_envelope(
    notification: Notification,
    *,
    source: str,
    mapper: MetadataMapper,
    to_contract: ContractMapping,
) -> Envelope | None:
    """The envelope of a stored event in its contract's current major; None if private."""
    envelopes = contract_envelopes(
        notification, source=source, mapper=mapper, to_contract=to_contract
    )
    return envelopes[0] if envelopes else None


def build_relay(
    app: ServiceApplication,
    settings: RelaySettings,
    *,
    source: str,
    topic: str,
    to_contract: ContractMapping,
    also_publish: Collection[str] = (),
) -> Relay:
    assert isinstance(app.mapper, MetadataMapper)
    return Relay(
        source=source,
        topic=topic,
        recorder=app.recorder,
        mapper=app.mapper,
        tracking=app.recorder,
        producer=reliable_producer(settings.kafka_bootstrap_servers),
        to_contract=to_contract,
        batch_size=settings.relay_batch_size,
        poll_interval=settings.relay_poll_interval,
        watched_poll_interval=settings.relay_watched_poll_interval,
        also_publish=also_publish,
        watch_commits=commit_watch(
            app.recorder,
            name=f"relay:{topic}",
            listen_retry_interval=settings.relay_listen_retry_interval,
            sqlite_check_interval=settings.relay_sqlite_check_interval,
        )
        if settings.relay_wake_on_commit
        else None,
        announce=fetch_wakeups(settings).announce,
    )


async def run_relay(relay: Relay, bootstrap: str, partitions: int) -> None:
    """The relay process: create the topic if needed, publish until SIGINT/SIGTERM."""
    await ensure_topics(bootstrap, {relay.topic: partitions})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await relay.producer.start()
    try:
        await relay.run(stopping)
    finally:
        await stop_producer(relay.producer)


def serve_relay(
    app: ServiceApplication,
    settings: RelaySettings,
    *,
    source: str,
    topic: str,
    to_contract: ContractMapping,
    also_publish: Collection[str] = (),
) -> None:
    """The body of ``python -m write_side.<service>.relay``: run until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def serve() -> None:
        # aiokafka's producer must be made inside the running event loop.
        relay = build_relay(
            app,
            settings,
            source=source,
            topic=topic,
            to_contract=to_contract,
            also_publish=also_publish,
        )
        await run_relay(relay, settings.kafka_bootstrap_servers, settings.kafka_topic_partitions)

    try:
        asyncio.run(serve())
    finally:
        app.close()
