"""`cqrs trace` on files written by the OTLP JSON file exporter: found by trace id or by
an aggregate's id, printed as a tree with the linked batch spans."""

import json
from pathlib import Path

import pytest

from devstack import traces

TRACE, OTHER = "a" * 32, "b" * 32


def span(trace: str, span_id: str, name: str, start_ms: int, end_ms: int, **extra) -> dict:
    return {
        "traceId": trace,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(1_000_000_000_000 + start_ms * 1_000_000),
        "endTimeUnixNano": str(1_000_000_000_000 + end_ms * 1_000_000),
        "status": {},
        **extra,
    }


def line(service: str, *spans: dict) -> str:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": list(spans)}]}]}
    )


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    subject = [{"key": "cqrs.subject", "value": {"stringValue": "order-1"}}]
    (tmp_path / "orders-api-1.jsonl").write_text(
        line("orders-api", span(TRACE, "1" * 16, "POST /orders", 0, 30)) + "\n"
    )
    (tmp_path / "consumers-saga-2.jsonl").write_text(
        line(
            "consumers-saga",
            span(
                TRACE,
                "2" * 16,
                "consumers-saga orders.OrderCreated.v2",
                50,
                60,
                parentSpanId="1" * 16,
                attributes=subject,
            ),
        )
        + "\n"
        + '{"resourceSpans": [{"half a line'  # being written: skipped
    )
    batch_count = [{"key": "messaging.batch.message_count", "value": {"intValue": "3"}}]
    (tmp_path / "orders-relay-3.jsonl").write_text(
        line(
            "orders-relay",
            span(
                OTHER,
                "3" * 16,
                "publish orders",
                35,
                40,
                attributes=batch_count,
                links=[{"traceId": TRACE, "spanId": "1" * 16}],
            ),
        )
        + "\n"
    )
    return tmp_path


def test_an_aggregates_id_or_the_trace_id_finds_the_trace(directory):
    spans = traces.read_spans(directory)
    assert traces.trace_ids_for(spans, "order-1") == [TRACE]
    assert traces.trace_ids_for(spans, TRACE.upper()) == [TRACE]
    assert traces.trace_ids_for(spans, "order-2") == []


def test_the_tree_has_timings_the_children_indented_and_the_linked_batches(directory):
    found = traces.find_trace(directory, "order-1")
    assert found is not None
    assert traces.render(found) == [
        f"trace {TRACE}: 2 spans, 60.0 ms, 2 processes",
        "     start   duration  process         span",
        "     0.0ms     30.0ms  orders-api      POST /orders",
        "    35.0ms      5.0ms  orders-relay      ~> publish orders (a batch of 3, its own trace)",
        "    50.0ms     10.0ms  consumers-saga    consumers-saga orders.OrderCreated.v2",
    ]


def test_cqrs_trace_says_so_when_there_is_none(directory, capsys):
    from devstack import cli

    assert cli.main(["trace", "order-9", "--dir", str(directory)]) == 1
    assert "no trace for order-9" in capsys.readouterr().out
