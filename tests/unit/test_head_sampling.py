"""Head sampling in the APIs (kernel.tracing): the provider's sampler decides whether a
request is traced before FastAPI's telemetry runs; a request not sampled skips that
telemetry, yet its commands still see its trace id with the sampled flag off, and a
sampled one gets a span on the very trace id the sampler decided on.

Each test has a provider of its own, spans in memory, and an app made by the kernel's
factory (``create_api``), called in process through httpx's ASGI transport.
"""

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind

from kernel import tracing
from kernel.http_api import create_api

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def traced_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Sampler], FastAPI]]:
    """An app whose process traces with ``sampler``; ``app.state.spans`` holds its spans.
    ``POST /things`` answers the trace context its command would store with its events,
    and whether FastAPI's telemetry observed the request."""
    exporters: list[InMemorySpanExporter] = []

    def make(sampler: Sampler) -> FastAPI:
        provider = tracing.new_provider(sampler)
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        exporters.append(memory)
        monkeypatch.setattr(tracing, "_provider", provider)
        monkeypatch.setattr(tracing, "_enabled", True)
        app = create_api(title="things")
        app.state.spans = memory

        @app.post("/things")
        def thing(request: Request) -> dict[str, object]:
            return {
                "trace": tracing.current_trace_context(),
                "observed": request.scope.get("fastapi.telemetry") is not None,
            }

        @app.get("/health")
        def health() -> dict[str, object]:
            return {"trace": tracing.current_trace_context()}

        return app

    yield make
    for memory in exporters:
        memory.shutdown()


@pytest.fixture
async def client() -> AsyncIterator[Callable[[FastAPI], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(app: FastAPI) -> httpx.AsyncClient:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        clients.append(http)
        return http

    yield make
    for http in clients:
        await http.aclose()


def server_spans(app: FastAPI) -> dict[int, ReadableSpan]:
    finished = app.state.spans.get_finished_spans()
    return {s.context.trace_id: s for s in finished if s.kind is SpanKind.SERVER}


def parse(traceparent: str) -> tuple[int, int, str]:
    _, trace_id, span_id, flags = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16), flags


async def test_a_root_request_is_sampled_on_its_own_trace_id_and_otherwise_skips_telemetry(
    traced_api, client
):
    ratio = TraceIdRatioBased(0.5)
    app = traced_api(ParentBased(ratio))
    http = client(app)
    answers = [(await http.post("/things")).json() for _ in range(40)]

    spans = server_spans(app)
    sampled = 0
    for answer in answers:
        trace_id, span_id, flags = parse(answer["trace"]["traceparent"])
        # The sampler's decision on the trace id the request's events carry...
        decided = ratio.should_sample(None, trace_id, "POST").decision.is_sampled()
        # ...is the one taken: a span on that trace id, and the flag says so.
        assert (trace_id in spans, flags, answer["observed"]) == (
            (True, "03", True) if decided else (False, "02", False)  # 2: a random trace id
        )
        if decided:
            sampled += 1
            assert spans[trace_id].context.span_id == span_id
            assert spans[trace_id].parent is None
    assert 0 < sampled < len(answers)
    assert len(spans) == sampled


async def test_a_callers_traceparent_decides_and_its_trace_goes_on(traced_api, client):
    app = traced_api(ParentBased(ALWAYS_OFF))
    http = client(app)

    sampled = (
        await http.post("/things", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    ).json()
    trace_id, span_id, flags = parse(sampled["trace"]["traceparent"])
    [span] = server_spans(app).values()
    assert (trace_id, flags, sampled["observed"]) == (int(TRACE, 16), "01", True)
    assert span.context.span_id == span_id
    assert span.parent is not None and span.parent.span_id == int(PARENT, 16)

    other = "0af7651916cd43dd8448eb211c80319c"
    unsampled = (
        await http.post("/things", headers={"traceparent": f"00-{other}-{PARENT}-00"})
    ).json()
    trace_id, span_id, flags = parse(unsampled["trace"]["traceparent"])
    assert (trace_id, flags, unsampled["observed"]) == (int(other, 16), "00", False)
    assert span_id != int(PARENT, 16)  # a span of its own, not recorded

    root = (await http.post("/things")).json()
    trace_id, _, flags = parse(root["trace"]["traceparent"])
    assert trace_id not in (0, int(TRACE, 16), int(other, 16)) and flags == "02"
    assert len(server_spans(app)) == 1


async def test_health_probes_are_not_traced(traced_api, client):
    app = traced_api(ALWAYS_ON)
    answer = (await client(app).get("/health")).json()
    assert answer["trace"] == {}
    assert server_spans(app) == {}


async def test_without_head_sampling_ids_fastapis_span_decides(traced_api, client, monkeypatch):
    """A provider whose ids are not ``RequestTraceIds`` (set up by someone else): the
    API cannot know the span's trace id beforehand, so FastAPI's span decides alone."""
    app = traced_api(ParentBased(ALWAYS_ON))
    monkeypatch.setattr(tracing._provider, "id_generator", tracing.RandomIdGenerator())
    answer = (await client(app).post("/things")).json()
    trace_id, _, flags = parse(answer["trace"]["traceparent"])
    assert (flags, answer["observed"]) == ("03", True)
    assert trace_id in server_spans(app)
