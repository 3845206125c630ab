"""Transaction-log tailing: a service's notification log → its Kafka topic, in order.

The relay is the only reader of the log. Three tasks make a pipeline. The first reads
the notifications after the last one it read and maps each domain event to its
contract event (in a worker thread; after a full batch, the next one while this one is
sent), then sends them, once fewer than ``relay_batches_in_flight`` batches are
unacknowledged. The second awaits each sent batch's acks, in the order sent: once all
of a batch's are in, every message up to its position is acknowledged. The third
records that position (eventsourcing's tracking record), one write at a time and
``relay_record_interval`` apart: what is acknowledged meanwhile goes into the next
write. So the next batch is read, mapped and sent while the previous ones are
acknowledged and recorded, and a position is recorded only once every message up to it
was acknowledged, positions in order. Killed at any moment, the relay resends at most what
it had not recorded (consumers are idempotent) and never skips an event. A send that
fails stops the relay with its error; the position stays before it.

Order: one task sends, in notification order, to one idempotent producer (acks=all),
which keeps one request in flight per broker and retries a failed request before any
later one: each aggregate's events (one key, one partition) reach the topic in
notification order.

Gaps: the SQLAlchemy recorder serialises writers (an exclusive table lock on
PostgreSQL, a single writer on SQLite), so notification ids become visible in id
order; an id missing below a visible one belongs to a rolled-back transaction and will
never appear. See docs/adr/0003-relay-reads-the-notification-log.md.

Waiting: when the log has nothing new, the relay waits until its store announces a
commit (``kernel.wakeup``) or the poll interval has passed, whichever comes
first: ``relay_watched_poll_interval`` while the watch is announcing commits,
``relay_poll_interval`` when there is none. The announcement only wakes it sooner: what
it publishes is always what the SELECT after its position finds. Once a batch is
acknowledged, the relay tells consumers on this machine that its topic has new messages
(``announce``; see ``kernel.kafka.FetchWakeups``), for a broker that does not hold
empty fetches.
"""

import asyncio
import contextlib
import functools
import logging
import operator
import signal
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, NotRequired, TypedDict, Unpack

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import ApplicationRecorder, Notification, Tracking, TrackingRecorder
from opentelemetry.trace import SpanKind

from contracts.base import ContractEvent
from contracts.envelope import Envelope, Headers, encode_envelope, event_id_for
from contracts.registry import check_also_publish, editions
from kernel import health as process_health
from kernel import metrics, tracing
from kernel.application import ServiceApplication
from kernel.kafka import (
    ensure_topics,
    fetch_wakeups,
    reliable_producer,
    stop_producer,
)
from kernel.leadership import Fenced, Leadership, LeadershipLost, leadership_for
from kernel.logs import configure_logging
from kernel.settings import RelaySettings
from kernel.store import MetadataMapper
from kernel.tracing import trace_headers
from kernel.wakeup import CommitWatch, commit_watch, is_active

log = logging.getLogger(__name__)

ContractMapping = Callable[[DomainEventProtocol[Any]], ContractEvent | None]
"""Maps a domain event to its public contract event; None keeps it private."""


def contract_mapping(
    published: Mapping[type, type[ContractEvent]],
    *,
    private: Collection[type] = (),
    computed: Mapping[str, Callable[[Any], Any]] | None = None,
) -> ContractMapping:
    """A relay's ``to_contract``, from a table: domain event class → contract event class.

    A contract event takes each of its fields from the domain event's attribute of the
    same name, or from ``computed`` (field → function of the domain event) for a field
    the event holds under another name or not at all (the aggregate's id: ``aggregate_id``).
    Events of the ``private`` classes stay private (None); any other is a TypeError, which
    stops the relay: a new domain event must be published or declared private.
    """
    computed = computed or {}
    builders: dict[type, Callable[[Any], ContractEvent] | None] = dict.fromkeys(private)
    for event_class, contract_class in published.items():
        builders[event_class] = _contract_builder(event_class, contract_class, computed)

    def to_contract(event: DomainEventProtocol[Any]) -> ContractEvent | None:
        try:
            build = builders[type(event)]
        except KeyError:
            raise TypeError(
                f"no contract mapping for domain event {type(event).__qualname__}"
            ) from None
        return None if build is None else build(event)

    return to_contract


def _contract_builder(
    event_class: type,
    contract_class: type[ContractEvent],
    computed: Mapping[str, Callable[[Any], Any]],
) -> Callable[[Any], ContractEvent]:
    held = {attribute.name for attribute in fields(event_class)}
    getters = {
        name: computed.get(name) or operator.attrgetter(name)
        for name in contract_class.model_fields
        if name in computed or name in held
    }
    missing = [
        name
        for name, info in contract_class.model_fields.items()
        if info.is_required() and name not in getters
    ]
    if missing:
        raise TypeError(
            f"{event_class.__qualname__} has no {', '.join(missing)} for "
            f"{contract_class.__qualname__}"
        )

    def build(event: Any) -> ContractEvent:
        return contract_class.model_validate({name: get(event) for name, get in getters.items()})

    return build


def aggregate_id(event: DomainEventProtocol[Any]) -> str:
    """The id of the event's aggregate, as text (a contract's ``order_id``, say)."""
    return str(event.originator_id)


Message = tuple[bytes, bytes, Headers]
"""One Kafka message as the relay sends it: value, key, headers."""

PRODUCER_MAX_BATCH_BYTES = 256 * 1024
"""The relay's producer batches (aiokafka's default is 16 KiB): a relay batch of 500
events goes out in a request or two, not one per 16 KiB of each partition."""

_partitioner = DefaultPartitioner()


async def send_in_batches(
    producer: AIOKafkaProducer, topic: str, messages: list[Message]
) -> list["asyncio.Future[Any]"]:
    """Hand the messages to the producer in order; the acks to await, one per producer
    batch.

    Each partition's messages go into producer batches (aiokafka's batch API), each
    sent as soon as it is full and the rest at the end: per message, a future and
    a metadata look-up less than ``send``, and the same partition for a key as its
    default partitioner. Messages of one partition keep their order.
    """
    partitions = sorted(await producer.partitions_for(topic))
    partition_of: dict[bytes, int] = {}
    filling: dict[int, BatchBuilder] = {}
    acks = []
    for value, key, headers in messages:
        partition = partition_of.get(key)
        if partition is None:
            partition = partition_of[key] = _partitioner(key, partitions, partitions)
        builder = filling.get(partition)
        if builder is None:
            builder = filling[partition] = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
            acks.append(await producer.send_batch(builder, topic, partition=partition))
            builder = filling[partition] = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None, headers=headers)
    for partition, builder in filling.items():
        acks.append(await producer.send_batch(builder, topic, partition=partition))
    return acks


@dataclass(frozen=True)
class Batch:
    """The notifications read after a position, as the messages to publish."""

    last: int
    """The id of the last notification read (the position once published)."""
    read: int
    """How many notifications were read; private events are read but not published."""
    messages: list[Message]
    last_time: datetime | None = None
    """When the last notification's event happened (for the lag in seconds)."""


@dataclass(frozen=True)
class _Sent:
    last: int
    acks: list["asyncio.Future[Any]"]
    read: int = 0
    last_time: datetime | None = None


class _InFlight:
    """The batches sent and not yet acknowledged, oldest first (``limit`` at most), and
    the position up to which every message sent is acknowledged."""

    def __init__(self, limit: int):
        self.batches: deque[_Sent] = deque()
        self.room = asyncio.Semaphore(limit)
        self.more = asyncio.Event()
        self.closed = False
        self.acknowledged: int | None = None
        self.moved = asyncio.Event()
        """Set when ``acknowledged`` moved, and when no more acks will be awaited."""
        self.settled = asyncio.Event()
        """Set when no more acks will be awaited."""

    def add(self, sent: _Sent) -> None:
        self.batches.append(sent)
        self.more.set()

    def close(self) -> None:
        """Nothing more will be sent."""
        self.closed = True
        self.more.set()


@dataclass(kw_only=True, eq=False)
class Relay:
    topic: str
    recorder: ApplicationRecorder
    encoder: "ContractEncoder"
    """What the stored events are published as."""
    tracking: TrackingRecorder
    producer: AIOKafkaProducer
    settings: RelaySettings
    """The batch size, the batches in flight, the intervals (``RELAY_*``)."""
    stop_timeout: float = 5.0
    watch_commits: CommitWatch | None = None
    announce: Callable[[str], object] | None = None
    leadership: Leadership | None = None
    """With one, ``run`` publishes only while this relay leads (kernel.leadership)."""
    recorded: int | None = field(default=None, init=False)
    """The last position this relay recorded (None until it records one)."""
    acknowledged: int | None = field(default=None, init=False)
    """The last position the broker acknowledged in this run (None before the first)."""
    acknowledged_time: datetime | None = field(default=None, init=False)
    """When that position's event happened."""

    def __post_init__(self) -> None:
        self.tracking_name = f"relay:{self.topic}"
        self._term: Leadership | None = None
        """The leadership while this relay leads: its positions are recorded fenced."""

    @property
    def leading(self) -> bool:
        """Whether this relay publishes now (always, without leader election)."""
        return self.leadership is None or self._term is not None

    def position(self) -> int:
        """The last notification id the broker has acknowledged (as recorded)."""
        return self.tracking.max_tracking_id(self.tracking_name) or 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until ``stopping`` is set, then record what was acknowledged within
        ``stop_timeout`` seconds (the rest is sent again after the restart).

        With a ``leadership``: wait until this relay leads, publish while it does, and
        when it no longer does (it could not confirm it in time, or a position write was
        fenced), stop publishing and wait again; step down when stopping."""
        leadership = self.leadership
        if leadership is None:
            await self._publish(stopping)
            return
        try:
            lost_it = False
            while await leadership.wait_to_lead(stopping, lost_it=lost_it):
                await self._lead(leadership, stopping)
                lost_it = True  # it ends only when stopping, or when the leadership was lost
        finally:
            await leadership.close()

    async def _lead(self, leadership: Leadership, stopping: asyncio.Event) -> None:
        """Publish until ``stopping`` is set or the leadership is lost; then step down."""
        ended = asyncio.Event()
        keeping = asyncio.create_task(leadership.keep())
        stopped = asyncio.create_task(stopping.wait())
        for task in (keeping, stopped):
            task.add_done_callback(lambda _: ended.set())
        self._term = leadership
        try:
            await self._publish(ended)
        except Fenced as fenced:
            log.warning("relay %s is fenced: %s; it stops publishing", self.tracking_name, fenced)
        except LeadershipLost as lost:
            log.warning(
                "relay %s lost its leadership: %s; it stops publishing", self.tracking_name, lost
            )
        finally:
            self._term = None
            keeping.cancel()
            stopped.cancel()
            await asyncio.gather(keeping, stopped, return_exceptions=True)
            await leadership.step_down()

    async def _publish(self, stopping: asyncio.Event) -> None:
        """Publish from the recorded position until ``stopping`` is set."""
        position = await asyncio.to_thread(self.position)
        log.info("relay %s starts after position %d", self.tracking_name, position)
        wake = asyncio.Event()
        watching = None
        if self.watch_commits is not None:
            watching = asyncio.create_task(self._watch_commits(self.watch_commits, wake))
        try:
            await self._pipeline(position, wake, stopping)
        finally:
            if watching is not None:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)

    def current_poll_interval(self) -> float:
        """How long to wait for a commit's announcement before looking all the same."""
        if is_active(self.watch_commits):
            return self.settings.relay_watched_poll_interval
        return self.settings.relay_poll_interval

    def _announce(self, sent: Collection[object]) -> None:
        """Tell this machine's consumers that the topic has new messages (if any were
        sent: an acknowledged batch may hold only private events)."""
        if sent and self.announce is not None:
            self.announce(self.topic)

    async def catch_up(self, position: int | None = None) -> int:
        """Publish, pipelined as ``run`` does, everything in the log after ``position``
        (by default the recorded one) up to its end (a read that finds less than a
        batch); return the position recorded then."""
        if position is None:
            position = await asyncio.to_thread(self.position)
        await self._pipeline(position, None, None)
        return self.recorded if self.recorded is not None else position

    async def publish_next_batch(self, position: int) -> tuple[int, int]:
        """One batch after ``position``, not pipelined: read, send, wait for every ack,
        record. Return the new position and how many notifications were read."""
        batch = await asyncio.to_thread(self.read_batch, position)
        if not batch.read:
            return position, 0
        for ack in await self._send(batch.messages):
            await ack  # raises if the send failed: the position stays put
        self._announce(batch.messages)
        await asyncio.to_thread(self._record, batch.last)
        return batch.last, batch.read

    def read_batch(self, position: int) -> Batch:
        """The next notifications after ``position`` as messages (in a worker thread)."""
        notifications = self.recorder.select_notifications(
            position + 1, self.settings.relay_batch_size
        )
        if not notifications:
            return Batch(position, 0, [])
        messages = [message for n in notifications for message in self.encoder.messages(n)]
        last_time = self.event_time(notifications[-1]) if metrics.enabled() else None
        return Batch(notifications[-1].id, len(notifications), messages, last_time)

    def event_time(self, notification: Notification) -> datetime | None:
        """When the notification's event happened."""
        domain_event, _ = self.encoder.mapper.decode(notification)
        return getattr(domain_event, "timestamp", None)

    async def _pipeline(
        self, position: int, wake: asyncio.Event | None, stopping: asyncio.Event | None
    ) -> None:
        """Read and send in one task, await the acks in another, record the position
        acknowledged in a third, until stopping is set (or, without ``wake``, until a
        read reaches the end of the log). Whatever ends it, nothing more is sent, and what was sent is
        recorded once acknowledged (within ``stop_timeout`` unless caught up); the first
        error is raised."""
        in_flight = _InFlight(self.settings.relay_batches_in_flight)
        acknowledging = asyncio.create_task(self._acknowledge_in_order(in_flight))
        recording = asyncio.create_task(self._record_acknowledged(in_flight))
        sending = asyncio.create_task(self._read_and_send(position, in_flight, wake))
        stopped = asyncio.ensure_future(stopping.wait() if stopping else asyncio.Future())
        tasks = (acknowledging, recording, sending)
        try:
            await asyncio.wait({*tasks, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Sending returns by itself only when it caught up: then every ack is awaited.
            caught_up = sending.done() and not sending.cancelled() and not sending.exception()
            sending.cancel()
            stopped.cancel()
            await asyncio.gather(sending, stopped, return_exceptions=True)
            in_flight.close()
            await self._settle(in_flight, acknowledging, recording, caught_up)
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def _read_and_send(
        self, position: int, in_flight: _InFlight, wake: asyncio.Event | None
    ) -> None:
        """Read batches (in a worker thread) and send each once fewer than
        ``relay_batches_in_flight`` are unacknowledged. After a full batch the next one is
        read while this one is sent; a short one reached the end of the log, so the next
        read waits for a commit (or the poll). Without ``wake``, return there."""
        loop = asyncio.get_running_loop()

        def read_after(position: int) -> "asyncio.Future[Batch]":
            if wake is not None:
                wake.clear()  # before the SELECT: a commit after it sets it again
            return loop.run_in_executor(None, self.read_batch, position)

        reading: asyncio.Future[Batch] | None = read_after(position)
        try:
            while reading is not None:
                batch = await reading
                reading = None
                if batch.read == self.settings.relay_batch_size:
                    reading = read_after(batch.last)  # more may be waiting: read on meanwhile
                if batch.read:
                    position = batch.last
                    await self._room_for_a_batch(in_flight)
                    if self._term is not None and not self._term.current():
                        raise LeadershipLost("its lease ran out before a send (was it paused?)")
                    acks = await self._send(batch.messages)
                    in_flight.add(_Sent(batch.last, acks, batch.read, batch.last_time))
                if reading is None:
                    if wake is None:
                        return  # caught up
                    # Not wait_for: told to stop as a commit woke it, it went on (ADR 35).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.current_poll_interval()):
                            await wake.wait()
                    reading = read_after(position)
        finally:
            if reading is not None:
                reading.cancel()

    async def _room_for_a_batch(self, in_flight: _InFlight) -> None:
        """Wait until fewer than ``relay_batches_in_flight`` batches are unacknowledged;
        warn once if that takes more than ``relay_ack_warning_after`` seconds (the broker
        is away?)."""
        if not in_flight.room.locked():
            await in_flight.room.acquire()
            return
        try:
            async with asyncio.timeout(self.settings.relay_ack_warning_after):
                await in_flight.room.acquire()
        except TimeoutError:
            log.warning(
                "relay %s waits for the broker: %d batches sent, not acknowledged after %g s",
                self.tracking_name,
                len(in_flight.batches),
                self.settings.relay_ack_warning_after,
            )
            await in_flight.room.acquire()

    async def _send(self, messages: list[Message]) -> list["asyncio.Future[Any]"]:
        """``send_in_batches``, in a span of the batch's own."""
        topic = self.topic
        # Its own trace, linked to the events' (docs/adr/0032); ends once all are acked.
        span = tracing.batch_span(
            f"publish {topic}",
            (headers for _, _, headers in messages),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.destination.name": topic,
                "messaging.batch.message_count": len(messages),
            },
        )
        acks = await send_in_batches(self.producer, topic, messages)
        tracing.end_when_acknowledged(span, acks)
        return acks

    async def _acknowledge_in_order(self, in_flight: _InFlight) -> None:
        """Await each sent batch's acks, in the order sent; once all of a batch's are in,
        every message up to its position is acknowledged. Raise the error of a failed
        send (the acknowledged position stays before it)."""
        batches = in_flight.batches
        try:
            while True:
                if not batches:
                    if in_flight.closed:
                        return
                    in_flight.more.clear()
                    await in_flight.more.wait()
                    continue
                for ack in batches[0].acks:
                    await ack  # raises if the send failed
                self._announce(batches[0].acks)
                acknowledged = batches.popleft()
                in_flight.acknowledged = acknowledged.last
                self.acknowledged, self.acknowledged_time = (
                    acknowledged.last,
                    acknowledged.last_time,
                )
                metrics.relay_published(self.topic, acknowledged.read)
                in_flight.room.release()
                in_flight.moved.set()
        finally:
            in_flight.settled.set()
            in_flight.moved.set()

    async def _record_acknowledged(self, in_flight: _InFlight) -> None:
        """Record the acknowledged position whenever it moved, one write at a time and
        ``relay_record_interval`` apart: what is acknowledged meanwhile goes into the next
        write. A slow write (SQLite's single writer is busy) delays only the record,
        never the sending; once the acks are settled, the last position is recorded at
        once and it ends."""
        while True:
            position = in_flight.acknowledged
            if position is not None and position != self.recorded:
                await asyncio.to_thread(self._record, position)
                self.recorded = position
                if self.settings.relay_record_interval > 0 and not in_flight.settled.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.settings.relay_record_interval):
                            await in_flight.settled.wait()
                continue
            if in_flight.settled.is_set():
                return
            in_flight.moved.clear()
            await in_flight.moved.wait()

    async def _settle(
        self,
        in_flight: _InFlight,
        acknowledging: "asyncio.Task[None]",
        recording: "asyncio.Task[None]",
        caught_up: bool,
    ) -> None:
        """Let the acks of what was sent come in (within ``stop_timeout`` unless caught
        up), then the last acknowledged position be recorded."""
        timeout = None if caught_up else self.stop_timeout
        if not acknowledging.done():
            _, waiting = await asyncio.wait({acknowledging}, timeout=timeout)
            if waiting:
                acknowledging.cancel()
                await asyncio.gather(acknowledging, return_exceptions=True)
                log.warning(
                    "relay %s stopped with %d batches unacknowledged after %g s; "
                    "they will be sent again",
                    self.tracking_name,
                    len(in_flight.batches),
                    timeout,
                )
        if not recording.done():
            _, waiting = await asyncio.wait({recording}, timeout=timeout)
            if waiting:
                recording.cancel()
                await asyncio.gather(recording, return_exceptions=True)

    def _record(self, position: int) -> None:
        if self._term is not None:  # refused (Fenced) once another relay leads
            self._term.record_position(self.tracking_name, position)
        else:
            self.tracking.insert_tracking(Tracking(self.tracking_name, position))

    async def _watch_commits(self, watch: CommitWatch, wake: asyncio.Event) -> None:
        """Run the commit watch; if it fails, log it and go on polling without it."""
        try:
            await watch(wake)
        except Exception:
            log.exception("relay %s: commit watch failed; polling only", self.tracking_name)


@functools.cache
def _wire_type(model: type[ContractEvent]) -> str:
    return model.type()


@dataclass
class ContractEncoder:
    """What a service's stored events are published as: the contract events its
    ``to_contract`` maps them to, in CloudEvents envelopes from ``source``, the current
    major and the older ones of ``also_publish`` (a transition period)."""

    source: str
    mapper: MetadataMapper
    to_contract: ContractMapping
    also_publish: Collection[str] = ()

    def __post_init__(self) -> None:
        check_also_publish(self.also_publish)
        self.also_publish = frozenset(self.also_publish)

    def messages(self, notification: Notification) -> list[Message]:
        """``envelopes`` as the relay sends them (value, key, headers), the same
        bytes, without building the envelope models (``encode_envelope``)."""
        domain_event, metadata = self.mapper.decode(notification)
        contract = self.to_contract(domain_event)
        if contract is None:
            return []
        aggregate_id = str(notification.originator_id)
        key = aggregate_id.encode()
        version = notification.originator_version
        event_id = event_id_for(self.source, aggregate_id, version)
        correlation_id = metadata.correlation_id if metadata else event_id
        causation_id = metadata.causation_id if metadata else event_id
        time = domain_event.timestamp  # type: ignore[attr-defined]  # every aggregate event has one
        messages = []
        for edition in editions(contract, self.also_publish):
            value, headers = encode_envelope(
                id=event_id,
                type=_wire_type(type(edition)),
                source=self.source,
                subject=aggregate_id,
                time=time,
                correlationid=correlation_id,
                causationid=causation_id,
                sequence=notification.id,
                aggregateversion=version,
                data_json=edition.__pydantic_serializer__.to_json(edition),
            )
            if metadata is not None and metadata.traceparent:  # the command's trace goes on
                headers.extend(trace_headers(metadata.traceparent, metadata.tracestate))
            messages.append((value, key, headers))
        return messages

    def envelopes(self, notification: Notification) -> list[Envelope]:
        """The messages a stored event is published as: none for a private event, one per
        major published (the current one, then those of ``also_publish``, newest first).

        Every copy has the same id, sequence and aggregate version: it is one event in
        several shapes, and consumers that read two of them keep the first. The relay
        publishes them; ``cqrs replay`` rebuilds read models from the current one.
        """
        domain_event, metadata = self.mapper.decode(notification)
        contract = self.to_contract(domain_event)
        if contract is None:
            return []
        aggregate_id = str(notification.originator_id)
        event_id = event_id_for(self.source, aggregate_id, notification.originator_version)
        return [
            Envelope(
                id=event_id,
                type=edition.type(),
                source=self.source,
                subject=aggregate_id,
                time=domain_event.timestamp,  # type: ignore[attr-defined]  # every aggregate event has one
                correlationid=metadata.correlation_id if metadata else event_id,
                causationid=metadata.causation_id if metadata else event_id,
                sequence=notification.id,
                aggregateversion=notification.originator_version,
                data=edition.model_dump(mode="json"),
            )
            for edition in editions(contract, self.also_publish)
        ]

    def envelope(self, notification: Notification) -> Envelope | None:
        """The envelope of a stored event in its contract's current major; None if private."""
        envelopes = self.envelopes(notification)
        return envelopes[0] if envelopes else None


class RelayRoute(TypedDict):
    """Where a relay publishes its service's events, and as what."""

    topic: str
    to_contract: ContractMapping
    also_publish: NotRequired[Collection[str]]
    """Older majors published beside the current one (a transition period)."""
    source: NotRequired[str | None]
    """The messages' CloudEvents ``source``; by default the topic's name (a service's
    topic is named after it)."""


def build_relay(
    app: ServiceApplication, settings: RelaySettings, **route: Unpack[RelayRoute]
) -> Relay:
    """A relay of ``app``'s log along ``route``."""
    topic = route["topic"]
    name = f"relay:{topic}"
    assert isinstance(app.mapper, MetadataMapper)
    return Relay(
        topic=topic,
        recorder=app.recorder,
        encoder=ContractEncoder(
            source=route.get("source") or topic,
            mapper=app.mapper,
            to_contract=route["to_contract"],
            also_publish=route.get("also_publish", ()),
        ),
        tracking=app.recorder,
        # No linger: a batch is handed to the producer all at once, waiting adds nothing.
        producer=reliable_producer(
            settings.kafka_bootstrap_servers, linger_ms=0, max_batch_size=PRODUCER_MAX_BATCH_BYTES
        ),
        settings=settings,
        watch_commits=commit_watch(app.recorder, name, settings),
        announce=fetch_wakeups(settings).announce,
        leadership=leadership_for(app.recorder, name, settings),
    )


def lag_sampler(relay: Relay, max_lag: int) -> Callable[[], Any]:
    """Sets the relay's gauges (leader, lag in events and in seconds) from the store;
    returns a problem when the leader is more than ``max_lag`` events behind."""

    def sample() -> str | None:
        leading = relay.leading
        metrics.RELAY_LEADER.labels(relay.topic).set(1 if leading else 0)
        if not leading:
            return None
        newest = relay.recorder.max_notification_id() or 0
        acknowledged = relay.acknowledged
        if acknowledged is None:
            acknowledged = relay.position()
        lag = max(0, newest - acknowledged)
        seconds = 0.0
        if lag:
            newest_time = _time_at(relay, newest)
            acknowledged_time = relay.acknowledged_time or _time_at(relay, max(acknowledged, 1))
            if newest_time is not None and acknowledged_time is not None:
                seconds = max(0.0, (newest_time - acknowledged_time).total_seconds())
        metrics.RELAY_LAG_EVENTS.labels(relay.topic).set(lag)
        metrics.RELAY_LAG_SECONDS.labels(relay.topic).set(seconds)
        return f"{lag} events behind (more than {max_lag})" if lag > max_lag else None

    async def sampled() -> str | None:
        return await asyncio.to_thread(sample)

    return sampled


def _time_at(relay: Relay, position: int) -> datetime | None:
    notifications = relay.recorder.select_notifications(position, 1)
    return relay.event_time(notifications[0]) if notifications else None


def watch_health(relay: Relay, health: process_health.Health) -> None:
    """The relay's readiness: the broker and the store answer, and (leading) it is at
    most ``HEALTH_MAX_LAG`` events behind; its lag gauges with it."""
    health.add_check("broker", lambda: process_health.broker_check(relay.producer))
    health.add_check("store", process_health.store_check(relay.recorder))
    health.add_sampler("relay lag", lag_sampler(relay, health.settings.max_lag))


async def run_relay(relay: Relay, bootstrap: str, partitions: int) -> None:
    """The relay process: create the topic if needed, publish until SIGINT/SIGTERM;
    its health and metrics on HEALTH_PORT (``kernel.health``)."""
    health = process_health.current()
    health.serve()
    health.start()
    await ensure_topics(bootstrap, {relay.topic: partitions})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await relay.producer.start()
    watch_health(relay, health)
    try:
        await relay.run(stopping)
    finally:
        await health.stop()
        await stop_producer(relay.producer)


def serve_relay(
    app: ServiceApplication, settings: RelaySettings, **route: Unpack[RelayRoute]
) -> None:
    """The body of ``python -m write_side.<service>.relay``: run until SIGINT/SIGTERM."""
    process = f"{route['topic']}-relay"
    configure_logging(process)
    tracing.configure_tracing(process)

    async def serve() -> None:
        # aiokafka's producer must be made inside the running event loop.
        relay = build_relay(app, settings, **route)
        await run_relay(relay, settings.kafka_bootstrap_servers, settings.kafka_topic_partitions)

    try:
        asyncio.run(serve())
    finally:
        app.close()
