"""The tracing benchmark's stand-in collector takes what production's exporter sends."""

from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from bench import otlp_receiver


class Outcomes(SpanExporter):
    """Production's exporter, keeping what each export answered."""

    def __init__(self, endpoint: str) -> None:
        self.exporter = OTLPSpanExporter(endpoint=endpoint, timeout=5)
        self.results: list[SpanExportResult] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        result = self.exporter.export(spans)
        self.results.append(result)
        return result


def test_the_otlp_exporter_succeeds_against_the_receiver_which_counts_its_exports(
    tmp_path: Path,
) -> None:
    with otlp_receiver.running(tmp_path) as url:
        outcomes = Outcomes(f"{url}{otlp_receiver.TRACES_PATH}")
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(outcomes))
        tracer = provider.get_tracer("test")

        for name in ("POST /orders", "relay batch"):
            with tracer.start_as_current_span(name):
                pass

        assert outcomes.results == [SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]
        assert otlp_receiver.exports(url) == 2
        provider.shutdown()


def test_the_receiver_refuses_what_is_not_a_trace_export(tmp_path: Path) -> None:
    with otlp_receiver.running(tmp_path) as url:
        refused = OTLPSpanExporter(endpoint=f"{url}/v1/metrics", timeout=5)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(refused))
        with provider.get_tracer("test").start_as_current_span("lost"):
            pass

        assert otlp_receiver.exports(url) == 0
        provider.shutdown()
