"""OpenTelemetry tracing: one process's set-up, and the trace context that travels with
the events (docs/observability.md, docs/adr/0032).

- A command's W3C trace context (the span current when its events are encoded) is
  stored in each event's metadata (``kernel.store``: ``traceparent``, ``tracestate``).
- The relay puts it in each Kafka message's headers (``trace_headers``); its own span
  for a batch *links* to the events' contexts rather than being their parent
  (``batch_span``): a batch carries many orders, an order is one trace.
- A consumer (saga reaction, projection) handles a batch in a span that links to its
  messages' contexts, and each message in a span of its own whose parent is the
  message's context (``message_span``): so the events a reaction saves carry that
  span's context, and the order's trace goes on, service after service.
- An API decides whether a request is sampled before FastAPI's telemetry runs
  (``untraced_context``): a request not sampled never reaches that telemetry, and its
  events still carry its trace id with the sampled flag off, so the order is sampled
  nowhere.

Configuration is the standard ``OTEL_*`` environment (``OTEL_SDK_DISABLED``,
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_TRACES_SAMPLER``...), with one local addition: ``TRACES_DIR``, where the
``otlp_json_file`` exporter writes ``<process>-<pid>.jsonl`` (what ``cqrs trace`` reads).
Unlike the SDK's default (``otlp``), an unset ``OTEL_TRACES_EXPORTER`` exports nothing
and sets nothing up: a process nobody configured pays nothing.
"""

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.datastructures import Headers
from starlette.types import Scope

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

log = logging.getLogger(__name__)
R = TypeVar("R")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
DEFAULT_TRACES_DIR = "var/traces"
DEFAULT_MAX_LINKS = 1000
"""A relay or consumer batch links to each distinct context of its messages (the SDK's
default limit, 128, would drop most of a 500-message batch's)."""

_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("kernel")
"""The kernel's spans (a proxy: it follows the provider ``configure_tracing`` sets)."""

_enabled = False
_configured: str | None = None
_provider: "TracerProvider | None" = None


def enabled() -> bool:
    """Whether this process records spans (``configure_tracing`` set an exporter up)."""
    return _enabled


def _sdk_disabled(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def exporters_named(env: Mapping[str, str] | None = None) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (none when unset, or when the SDK is
    disabled)."""
    env = os.environ if env is None else env
    if _sdk_disabled(env):
        return []
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [n for n in names if n and n != "none"]


def configure_tracing(process: str, env: Mapping[str, str] | None = None) -> bool:
    """Set this process's tracer provider up from the environment, once (the composition
    root calls it); ``process`` names it (``service.name`` unless ``OTEL_SERVICE_NAME``
    says otherwise) and its file under ``TRACES_DIR``. Return whether spans are recorded.

    Instruments SQLAlchemy (per engine: ``instrument_engine``), PyMongo and aiokafka's
    producer. Client spans with no parent (a relay's poll, a group commit's insert, an
    idle consumer's reads) are not sampled: they would each be a trace of one span.
    """
    global _configured
    if _configured is not None:
        return _enabled
    env = os.environ if env is None else env
    _configured = process
    names = exporters_named(env)
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())  # OTEL_EXPORTER_OTLP_* say where
        elif name == "otlp_json_file":
            from opentelemetry.exporter.otlp.json.file.trace_exporter import FileSpanExporter

            directory = Path(env.get("TRACES_DIR") or DEFAULT_TRACES_DIR)
            directory.mkdir(parents=True, exist_ok=True)
            # A file per process: two copies of a process never interleave their lines.
            exporters.append(FileSpanExporter(directory / f"{process}-{os.getpid()}.jsonl"))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored", name)
    if not exporters:
        return False
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: process}
    max_links = int(env.get("OTEL_SPAN_LINK_COUNT_LIMIT") or DEFAULT_MAX_LINKS)
    provider = new_provider(
        _sampler_from_env(),
        resource=Resource.create(attributes),
        span_limits=SpanLimits(max_links=max_links),
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    use_provider(provider)
    _instrument_libraries()
    return True


def new_provider(
    configured: Sampler,
    resource: "Resource | None" = None,
    span_limits: "SpanLimits | None" = None,
) -> "TracerProvider":
    """A tracer provider whose sampler is ``configured`` (``OTEL_TRACES_SAMPLER``), except
    that client spans with no parent are dropped (``NoOrphanClientSpans``), and whose ids
    let an API sample a request before FastAPI's telemetry (``RequestTraceIds``)."""
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider(
        sampler=NoOrphanClientSpans(configured),
        resource=resource,
        span_limits=span_limits,
        id_generator=RequestTraceIds(),
    )


def use_provider(provider: "TracerProvider") -> None:
    """Record spans with ``provider`` (``configure_tracing``'s; a test's own)."""
    global _enabled, _provider
    _provider = provider
    _enabled = True


def _sampler_from_env() -> Any:
    from opentelemetry.sdk.trace import sampling

    return sampling._get_from_env_or_default()


def _instrument_libraries() -> None:
    if _instrumentation_on("pymongo"):
        from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

        PymongoInstrumentor().instrument()
    if _instrumentation_on("aiokafka"):
        # The producer's ``send`` (dead letters, re-published ones); the relay sends with
        # the batch API and its own span. Its consumer side is left alone: its ``getmany``
        # makes a root span per fetch (a trace each); the consumers' message spans are ours.
        import aiokafka
        from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
        from opentelemetry.instrumentation.utils import unwrap

        AIOKafkaInstrumentor().instrument()
        unwrap(aiokafka.AIOKafkaConsumer, "getone")
        unwrap(aiokafka.AIOKafkaConsumer, "getmany")


def _instrumentation_on(name: str) -> bool:
    """Whether ``name``'s instrumentation is wanted: tracing is on, and the standard
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (a comma list) does not name it."""
    disabled = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return _enabled and name not in {n.strip() for n in disabled.split(",")}


def instrument_engine(engine: Any) -> None:
    """SQLAlchemy's spans for an engine (the event store's), when tracing is on."""
    if not _instrumentation_on("sqlalchemy"):
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(engine=engine)


def outside_traces(target: Callable[[], R]) -> Callable[[], R]:
    """``target`` (a thread's) with the instrumentations switched off: for a thread that
    serves many commands and so belongs to no trace (the group commit's, the answer
    keeper's). Its statements' spans would be orphans, which the sampler drops, but
    SQLAlchemy's instrumentation would still do most of its work for each statement
    (about 2 % of a command's instructions in the orders API)."""

    def run() -> R:
        with suppress_instrumentation():
            return target()

    return run


_UNTRACED_PATHS = frozenset({"/health", "/metrics", "/livez", "/readyz"})
"""Health probes and metrics: never traced."""


def traces_requests() -> bool:
    """Whether an API's requests are traced (FastAPI's telemetry is on)."""
    return _instrumentation_on("fastapi")


def fastapi_telemetry() -> dict[str, Any]:
    """FastAPI's own telemetry settings (``FastAPI(telemetry=...)``): FastAPI traces each
    request itself (joining a caller's ``traceparent``). One server span a request: no
    span per dependency, endpoint and serialization, no metrics or log records of its
    own; nothing when tracing is off or ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names
    ``fastapi``. The requests it never sees: ``untraced_context``.

    FastAPI's rather than opentelemetry-instrumentation-fastapi: the contrib ASGI
    middleware cost the orders API about a third more CPU per command whether the request
    was sampled or not (attributes collected, routes walked), FastAPI's a few per cent
    (docs/adr/0032)."""
    return {
        "tracing": traces_requests(),
        "tracer_provider": _provider,
        "operation_spans": False,
        "metrics": False,
        "logs": False,
    }


# Head sampling: an API decides whether a request is sampled before FastAPI's telemetry.

_drawn_trace_id: ContextVar[int] = ContextVar("drawn_trace_id", default=0)


class RequestTraceIds(RandomIdGenerator):
    """The SDK's random ids, except that a request's server span gets the trace id its
    head sampling drew (``untraced_context``): the sampler decides on the same id both
    times."""

    def generate_trace_id(self) -> int:
        drawn = _drawn_trace_id.get()
        if drawn:
            _drawn_trace_id.set(0)
            return drawn
        return super().generate_trace_id()

    def draw_trace_id(self) -> int:
        """A new trace id for a request's span (``generate_trace_id`` gives it next)."""
        trace_id = super().generate_trace_id()
        _drawn_trace_id.set(trace_id)
        return trace_id


def untraced_context(scope: Scope) -> Context | None:
    """The context an API handles ``scope`` in without FastAPI's telemetry, or None when
    FastAPI's telemetry is to trace it (``kernel.http_api.create_api``).

    FastAPI's telemetry does work for every request it sees, sampled or not (it walks
    the middleware stack, attaches a context, wraps ``send`` and ``receive`` or runs its
    ``exclude`` path). So the provider's sampler decides here, first, as it will for
    FastAPI's span: with the caller's trace context as the parent, or with no parent and
    the trace id the span will get (``RequestTraceIds``); but without the span's
    attributes. A request it does not sample is handled in the context of the
    non-recording span the SDK would have made: the events its commands save carry its
    trace id with the sampled flag off, so no service downstream samples the order
    either. Health probes and metrics are handled in an empty context."""
    if scope["type"] != "http":
        return None
    if scope.get("path") in _UNTRACED_PATHS:
        return Context()
    provider = _provider
    if provider is None:
        return None
    parent = _callers_context(scope)
    parent_span = trace.get_current_span(parent).get_span_context()
    ids = provider.id_generator
    if parent_span.is_valid:
        trace_id, random = parent_span.trace_id, parent_span.trace_flags.random_trace_id
    elif isinstance(ids, RequestTraceIds):
        trace_id, random = ids.draw_trace_id(), ids.is_trace_id_random()
    else:  # another provider's ids: the span's will differ, so let FastAPI's span decide
        return None
    decision = provider.sampler.should_sample(
        parent, trace_id, scope.get("method", "HTTP"), SpanKind.SERVER
    )
    if decision.decision.is_recording():
        return None
    _drawn_trace_id.set(0)
    unsampled = SpanContext(
        trace_id,
        ids.generate_span_id(),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.RANDOM_TRACE_ID if random else TraceFlags.DEFAULT),
        trace_state=decision.trace_state,
    )
    return trace.set_span_in_context(NonRecordingSpan(unsampled), parent)


def _callers_context(scope: Scope) -> Context:
    """The trace context (and baggage) the request's headers carry, read by the
    configured propagators (``OTEL_PROPAGATORS``); an empty one, without reading, when
    no header has a name they read (most requests)."""
    propagator = propagate.get_global_textmap()
    names = _header_names(propagator)
    if any(name in names for name, _ in scope["headers"]):
        return propagator.extract(Headers(scope=scope))
    return Context()


@functools.cache
def _header_names(propagator: Any) -> frozenset[bytes]:
    """The header names ``propagator`` reads, as ASGI gives them (lower case bytes)."""
    return frozenset(field.lower().encode("latin-1") for field in propagator.fields)


def shutdown() -> None:
    """Export what is buffered (the SDK also does at exit)."""
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "shutdown", None)
    if flush is not None:
        flush()


# The sampler.


class NoOrphanClientSpans(Sampler):
    """Drops client spans that have no parent (``inner`` decides the rest)."""

    def __init__(self, inner: Sampler):
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                return SamplingResult(Decision.DROP)
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanClientSpans{{{self.inner.get_description()}}}"


# The trace context: stored with events, carried in headers, continued by consumers.


def current_trace_context() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span; empty when there is none
    (tracing off, or no span): what ``kernel.store`` stores beside an event."""
    carrier: dict[str, str] = {}
    if _enabled:
        _propagator.inject(carrier)
    return carrier


def trace_headers(traceparent: str | None, tracestate: str | None) -> list[tuple[str, bytes]]:
    """The Kafka headers of a stored trace context (none without one)."""
    if not traceparent:
        return []
    headers = [(TRACEPARENT, traceparent.encode())]
    if tracestate:
        headers.append((TRACESTATE, tracestate.encode()))
    return headers


def _header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            try:
                return bytes(value).decode()
            except UnicodeDecodeError:
                return None
    return None


def context_of_headers(headers: Iterable[tuple[str, bytes]]) -> Context | None:
    """The trace context a message's headers carry (None: none, or not valid)."""
    headers = list(headers)
    traceparent = _header(headers, TRACEPARENT)
    if traceparent is None:
        return None
    carrier = {TRACEPARENT: traceparent}
    tracestate = _header(headers, TRACESTATE)
    if tracestate:
        carrier[TRACESTATE] = tracestate
    extracted = _propagator.extract(carrier)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def span_context_of_headers(headers: Iterable[tuple[str, bytes]]) -> SpanContext | None:
    extracted = context_of_headers(headers)
    return None if extracted is None else trace.get_current_span(extracted).get_span_context()


def links_to(headers_of_messages: Iterable[Iterable[tuple[str, bytes]]]) -> list[Link]:
    """One link per distinct trace context of the messages (a command's several events
    share one)."""
    links: dict[tuple[int, int], Link] = {}
    for headers in headers_of_messages:
        span_context = span_context_of_headers(headers)
        if span_context is not None:
            links.setdefault((span_context.trace_id, span_context.span_id), Link(span_context))
    return list(links.values())


def batch_span(
    name: str,
    headers_of_messages: Iterable[Iterable[tuple[str, bytes]]],
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A span of its own trace for a batch of messages, linked to each message's context
    (not started as current; end it). A non-recording span when tracing is off."""
    if not _enabled:
        return trace.INVALID_SPAN
    return tracer.start_span(
        name,
        context=Context(),  # a root: never the child of whatever is current
        kind=kind,
        links=links_to(headers_of_messages),
        attributes=dict(attributes or {}),
    )


def end_when_acknowledged(span: Span, acks: Sequence[Any]) -> None:
    """End ``span`` once every future of ``acks`` is done (an error marks it)."""
    if not span.is_recording():
        return
    remaining = [len(acks)]
    if not acks:
        span.end()
        return

    def done(ack: Any) -> None:
        if not ack.cancelled() and ack.exception() is not None:
            span.set_status(Status(StatusCode.ERROR, str(ack.exception())))
        remaining[0] -= 1
        if remaining[0] == 0:
            span.end()

    for ack in acks:
        ack.add_done_callback(done)


@contextmanager
def current_span(span: Span) -> Iterator[Span]:
    """``span`` current meanwhile; ended after (an exception marks it)."""
    with trace.use_span(span, end_on_exit=True, record_exception=True):
        yield span


def message_attributes(
    headers: Iterable[tuple[str, bytes]], topic: str, partition: int, offset: int
) -> dict[str, Any]:
    """A consumed message's span attributes: where it was, its CloudEvents id and type,
    the aggregate it is about (``cqrs.subject``) and its correlation id."""
    headers = list(headers)
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
    }
    for header, attribute in (
        ("ce_id", "messaging.message.id"),
        ("ce_type", "cloudevents.event_type"),
        ("ce_subject", "cqrs.subject"),
        ("ce_correlationid", "cqrs.correlation_id"),
    ):
        value = _header(headers, header)
        if value is not None:
            attributes[attribute] = value
    return attributes


def message_span(
    name: str,
    headers: Iterable[tuple[str, bytes]],
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
) -> Span:
    """A span for handling one message, the child of the context the message carries (a
    new trace if it carries none); not started as current. Non-recording when off."""
    if not _enabled:
        return trace.INVALID_SPAN
    parent = context_of_headers(headers) or Context()
    return tracer.start_span(name, context=parent, kind=kind, attributes=dict(attributes or {}))


def ids_of_current_span() -> tuple[str, str] | None:
    """The current span's trace and span ids as hex (None when there is none)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def ids_of_headers(headers: Iterable[tuple[str, bytes]]) -> tuple[str, str] | None:
    """The trace and span ids of a message's ``traceparent`` (None without one)."""
    span_context = span_context_of_headers(headers)
    if span_context is None:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
