"""The trace context's round trip: a command's span → its events' metadata → the relay's
message headers → the consumer's span for the message (and the events it saves); the
relay's and consumers' batch spans link to the messages' traces; JSON log lines carry
the trace, span and correlation ids.

Spans go to an in-memory exporter of a provider of this test's own (the process's
global provider is left alone: other tests see tracing off).
"""

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from sqlalchemy import event

from kernel import metrics, tracing
from kernel.logs import configure_logging, message_fields, use_json
from kernel.messaging import ConsumedMessage
from kernel.metadata import MessageMetadata, caused_by
from kernel.reactions import Reaction, Reactor, SagaEnded
from kernel.relay import ContractEncoder
from kernel.store import event_store_env
from tests.kernel_example import contracts as contract
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.domain import Tally
from tests.kernel_example.relay import to_contract


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.NoOrphanClientSpans(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "_enabled", True)
    yield memory
    provider.shutdown()


@pytest.fixture
def app(tmp_path) -> Iterator[TalliesApplication]:
    application = TalliesApplication(env=event_store_env(f"sqlite:///{tmp_path}/t.db"))
    yield application
    application.close()


def consumed(messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> list[ConsumedMessage]:
    return [
        ConsumedMessage("tallies", 0, offset, key, value, tuple(headers))
        for offset, (value, key, headers) in enumerate(messages)
    ]


def published(app: TalliesApplication, after: int = 0) -> list[Any]:
    encoder = ContractEncoder("tallies", app.mapper, to_contract)
    return [
        message
        for notification in app.recorder.select_notifications(after + 1, 100)
        for message in encoder.messages(notification)
    ]


def traceparent_of(span: Any) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def test_a_commands_trace_context_is_stored_with_its_events_and_put_in_the_headers(spans, app):
    with tracing.tracer.start_as_current_span("POST /tallies") as command:
        app.start_tally("t-1")

    [notification] = app.recorder.select_notifications(1, 10)
    metadata = app.mapper.metadata_of(notification)
    assert metadata is not None and metadata.traceparent == traceparent_of(command)

    [(_, _, headers)] = published(app)
    assert ("traceparent", traceparent_of(command).encode()) in headers


def test_without_tracing_nothing_is_stored_and_no_header_is_added(app):
    app.start_tally("t-1")

    [notification] = app.recorder.select_notifications(1, 10)
    assert app.mapper.metadata_of(notification).traceparent is None
    [(_, _, headers)] = published(app)
    assert not [name for name, _ in headers if name in ("traceparent", "tracestate")]


def test_metadata_keeps_the_trace_context_through_storage():
    metadata = MessageMetadata(
        correlation_id="c",
        causation_id="c",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
    )
    assert MessageMetadata.from_stored(metadata.stored()) == metadata
    assert "traceparent" not in MessageMetadata.new().stored()


def test_a_reaction_continues_the_messages_trace_and_its_events_carry_its_span(spans, app):
    """metadata → headers → the consumer's context: the reaction's span is the child of
    the command's, in the same trace, and the event the reaction saves carries it."""
    with tracing.tracer.start_as_current_span("POST /tallies") as command:
        app.start_tally("t-1")
    messages = consumed(published(app))

    def close(app: Any, event: contract.TallyStarted, _: Any) -> None:
        tally = app.get_tally("t-1")  # get → mutate → save (a reaction's save stages)
        tally.close("reacted")
        app.save(tally)

    with contract.registered():
        reactor = Reactor(app, "tallies-saga", [Reaction(contract.TallyStarted, close)])
        result = reactor.react_batch(messages)
    assert not result.again and not result.dead_letters

    [reaction] = [s for s in spans.get_finished_spans() if s.name.startswith("tallies-saga")]
    assert reaction.kind is SpanKind.CONSUMER
    assert reaction.context.trace_id == command.get_span_context().trace_id
    assert reaction.parent is not None
    assert reaction.parent.span_id == command.get_span_context().span_id
    assert reaction.attributes["cqrs.subject"] == str(app.get_tally("t-1").id)

    closed = app.recorder.select_notifications(2, 1)[0]
    assert app.mapper.metadata_of(closed).traceparent == traceparent_of(reaction)
    [(_, _, headers)] = published(app, after=1)
    assert tracing.span_context_of_headers(headers).span_id == reaction.context.span_id


def test_a_batch_span_links_to_its_messages_traces_and_is_no_ones_child(spans, app):
    contexts = []
    for name in ("t-1", "t-2"):
        with tracing.tracer.start_as_current_span(f"POST {name}") as command:
            app.start_tally(name)
            app.add_to_tally(name, 2)  # a second event of the same span: one link
        contexts.append(command.get_span_context())
    messages = published(app)
    assert len(messages) == 4

    with tracing.tracer.start_as_current_span("something current"):
        batch = tracing.batch_span("publish tallies", (h for _, _, h in messages))
    batch.end()

    [finished] = [s for s in spans.get_finished_spans() if s.name == "publish tallies"]
    finished_span: ReadableSpan = finished
    assert finished_span.parent is None
    assert finished_span.context.trace_id not in {c.trace_id for c in contexts}
    assert [(link.context.trace_id, link.context.span_id) for link in finished_span.links] == [
        (c.trace_id, c.span_id) for c in contexts
    ]


async def test_the_relays_batch_span_ends_once_every_ack_is_in(spans):
    import asyncio

    loop = asyncio.get_running_loop()
    acks = [loop.create_future(), loop.create_future()]
    span = tracing.batch_span("publish tallies", [])
    tracing.end_when_acknowledged(span, acks)
    acks[0].set_result(None)
    await asyncio.sleep(0)
    assert not spans.get_finished_spans()
    acks[1].set_exception(OSError("broker away"))
    await asyncio.sleep(0)
    [finished] = spans.get_finished_spans()
    assert finished.status.status_code is trace.StatusCode.ERROR


def test_orphan_client_spans_are_not_sampled_children_are():
    sampler = tracing.NoOrphanClientSpans(ALWAYS_ON)
    orphan = sampler.should_sample(None, 1, "SELECT", SpanKind.CLIENT)
    assert orphan.decision is Decision.DROP
    root = sampler.should_sample(None, 1, "publish orders", SpanKind.PRODUCER)
    assert root.decision is Decision.RECORD_AND_SAMPLE
    parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(1, 2, is_remote=False, trace_flags=trace.TraceFlags(1))
        )
    )
    child = sampler.should_sample(parent, 1, "SELECT", SpanKind.CLIENT)
    assert child.decision is Decision.RECORD_AND_SAMPLE


def test_unset_or_disabled_exporters_set_nothing_up():
    assert tracing.exporters_named({}) == []
    assert tracing.exporters_named({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert (
        tracing.exporters_named({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == []
    )
    assert tracing.exporters_named({"OTEL_TRACES_EXPORTER": "otlp,otlp_json_file"}) == [
        "otlp",
        "otlp_json_file",
    ]


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def log_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    use_json(handler, "tallies-saga")
    logger = logging.getLogger("test.tracing.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_log_lines_carry_the_current_trace_span_and_correlation_ids(spans, log_lines):
    logger, stream = log_lines
    with (
        tracing.tracer.start_as_current_span("reaction") as span,
        caused_by(MessageMetadata(correlation_id="order-7", causation_id="event-1")),
    ):
        logger.info("saga ended: order %s approved", "o-7", extra={"outcome": "approved"})
    logger.warning("no context here")

    inside, outside = json_lines(stream)
    context = span.get_span_context()
    assert inside["message"] == "saga ended: order o-7 approved"
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert inside["correlation_id"] == "order-7"
    assert (inside["level"], inside["outcome"], inside["process"]) == (
        "INFO",
        "approved",
        "tallies-saga",
    )
    assert "time" in inside and inside["logger"] == "test.tracing.logs"
    assert "trace_id" not in outside and "correlation_id" not in outside


def test_a_dead_letters_line_carries_its_messages_ids(log_lines):
    logger, stream = log_lines
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = [("ce_correlationid", b"order-9"), ("traceparent", traceparent.encode())]
    logger.warning("dead-lettered", extra=message_fields(headers))

    [line] = json_lines(stream)
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == "b7ad6b7169203331"
    assert line["correlation_id"] == "order-9"


def test_configure_logging_leaves_a_root_someone_else_set_up_alone():
    root = logging.getLogger()
    formatters = [handler.formatter for handler in root.handlers]
    assert root.handlers  # pytest's
    configure_logging("anything")
    assert [handler.formatter for handler in root.handlers] == formatters


def test_a_sagas_end_is_logged_and_counted_once_its_step_is_committed(spans, app):
    """A batch whose first reaction fails (the store away) is run again: the reaction
    after it that ended a saga ran twice, and its end is one line and one count, in the
    span of the run that was committed."""
    for name in ("t-1", "t-2"):
        with tracing.tracer.start_as_current_span(f"POST {name}"):
            app.start_tally(name)
    messages = consumed(published(app))
    runs: list[str] = []

    def end(_: Any, event: contract.TallyStarted, __: Any) -> SagaEnded:
        runs.append(event.tally_name)
        if runs == ["t-1"]:
            raise OSError("store away")
        return SagaEnded(
            "tallying", event.tally_name, "started", datetime.now(UTC), {"why": "test"}
        )

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    use_json(handler, "tallies-saga")
    milestones = logging.getLogger("milestones.kernel.reactions")
    milestones.addHandler(handler)
    labels = {"saga": "tallying", "outcome": "started"}
    before = REGISTRY.get_sample_value("cqrs_sagas_ended_total", labels) or 0
    try:
        with contract.registered():
            reactor = Reactor(app, "tallies-saga", [Reaction(contract.TallyStarted, end)])
            first = reactor.react_batch(messages)
            assert isinstance(first.error, OSError) and first.again == messages
            assert json_lines(stream) == []
            second = reactor.react_batch(first.again)
    finally:
        milestones.removeHandler(handler)
    assert not second.again and second.error is None
    assert runs == ["t-1", "t-2", "t-1", "t-2"]

    lines = json_lines(stream)
    assert [line["message"] for line in lines] == [
        "saga ended: tallying t-1 started",
        "saga ended: tallying t-2 started",
    ]
    assert (lines[1]["saga_id"], lines[1]["outcome"], lines[1]["why"]) == ("t-2", "started", "test")
    reactions = [s for s in spans.get_finished_spans() if s.name.startswith("tallies-saga")]
    assert len(reactions) == 4
    committed = reactions[-1].get_span_context()
    assert (lines[1]["trace_id"], lines[1]["span_id"]) == (
        f"{committed.trace_id:032x}",
        f"{committed.span_id:016x}",
    )
    if metrics.enabled():
        assert REGISTRY.get_sample_value("cqrs_sagas_ended_total", labels) == before + 2


def test_the_group_commits_threads_belong_to_no_trace_and_run_uninstrumented(app):
    """The group commit's threads serve every command, so their statements' spans would
    be orphans the sampler drops: SQLAlchemy's instrumentation is switched off there, and
    only there, rather than doing its work for each statement for nothing."""
    seen: list[tuple[str, bool]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((threading.current_thread().name, is_instrumentation_enabled()))

    engine = app.recorder.datastore.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        app.start_tally("t-threads")
        assert app.repository.get(Tally.create_id("t-threads")) is not None
    finally:
        event.remove(engine, "before_cursor_execute", record)
    in_group_commit = [enabled for name, enabled in seen if name.startswith("group-commit")]
    elsewhere = [enabled for name, enabled in seen if not name.startswith("group-commit")]
    assert in_group_commit and not any(in_group_commit)
    assert elsewhere and all(elsewhere)
