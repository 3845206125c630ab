"""`cqrs trace ORDER_ID|TRACE_ID`: one trace of the local stack as a tree, with timings.

The local stack's processes write their spans as OTLP JSON lines, one file each,
under ``var/traces/`` (``OTEL_TRACES_EXPORTER=otlp_json_file``, ``kernel.tracing``).
This reads them all, finds the trace (by its id, or the trace of the spans about an
aggregate or a correlation id: an order's id finds its saga's trace), and prints its
spans as a tree: each line's start after the trace's first span, its duration, the
process and the span's name. The batch spans of other traces that link to a span of
this one (a relay's publish, a saga worker's or the projection's batch) are shown
under it, marked ``~>``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("var/traces")
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
KEYS = ("cqrs.subject", "cqrs.correlation_id")
"""Span attributes an ORDER_ID (or any aggregate or correlation id) is looked up in."""
ERROR = 2  # OTLP's STATUS_CODE_ERROR


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()
    error: bool = False

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _value(value: dict[str, Any]) -> Any:
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    return None


def _attributes(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


def spans_of_line(line: str) -> Iterator[Span]:
    """The spans of one OTLP JSON line (an export request)."""
    request = json.loads(line)
    for resource_spans in request.get("resourceSpans", ()):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", ()))
        service = str(resource.get("service.name", "?"))
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                yield Span(
                    trace_id=span["traceId"],
                    span_id=span["spanId"],
                    parent_id=span.get("parentSpanId") or None,
                    name=span.get("name", ""),
                    service=service,
                    start_ns=int(span["startTimeUnixNano"]),
                    end_ns=int(span["endTimeUnixNano"]),
                    attributes=_attributes(span.get("attributes", ())),
                    links=tuple(
                        (link["traceId"], link["spanId"]) for link in span.get("links", ())
                    ),
                    error=span.get("status", {}).get("code") == ERROR,
                )


def read_spans(directory: Path) -> list[Span]:
    """Every span of the ``*.jsonl`` files in ``directory`` (a line being written is
    skipped)."""
    spans: list[Span] = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    spans.extend(spans_of_line(line))
                except (ValueError, KeyError):
                    continue  # the last line may be half written
    return spans


def trace_ids_for(spans: Iterable[Span], key: str) -> list[str]:
    """The trace ids ``key`` names: itself if it is one; else the traces of the spans about
    it (aggregate or correlation id), the one with most spans first."""
    key = key.strip()
    if TRACE_ID.match(key.lower()):
        return [key.lower()]
    spans = list(spans)
    about = {s.trace_id for s in spans if any(s.attributes.get(n) == key for n in KEYS)}
    counts = Counter(span.trace_id for span in spans if span.trace_id in about)
    return [trace_id for trace_id, _ in counts.most_common()]


@dataclass
class Trace:
    trace_id: str
    spans: list[Span]
    linked: dict[str, list[Span]]
    """Spans of other traces, by the span id of this trace they link to."""

    @property
    def start_ns(self) -> int:
        return min(span.start_ns for span in self.spans)

    @property
    def end_ns(self) -> int:
        return max(span.end_ns for span in self.spans)

    def services(self) -> set[str]:
        return {span.service for span in self.spans}


def trace_of(spans: Iterable[Span], trace_id: str) -> Trace:
    spans = list(spans)
    own = sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: s.start_ns)
    ids = {span.span_id for span in own}
    linked: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        if span.trace_id == trace_id:
            continue
        for link_trace, link_span in span.links:
            if link_trace == trace_id and link_span in ids:
                linked[link_span].append(span)
    return Trace(trace_id, own, dict(linked))


def render(trace: Trace) -> list[str]:
    """The trace as lines: a tree by parent, the linked batch spans under their link."""
    if not trace.spans:
        return [f"trace {trace.trace_id}: no spans"]
    start = trace.start_ns
    ids = {span.span_id for span in trace.spans}
    children: dict[str | None, list[Span]] = defaultdict(list)
    for span in trace.spans:
        parent = span.parent_id if span.parent_id in ids else None
        children[parent].append(span)
    width = max(len(span.service) for span in trace.spans)
    heading = (
        f"trace {trace.trace_id}: {len(trace.spans)} spans, "
        f"{(trace.end_ns - start) / 1e6:.1f} ms, {len(trace.services())} processes"
    )
    lines = [heading, f"{'start':>10} {'duration':>10}  {'process'.ljust(width)}  span"]

    def line(span: Span, depth: int, mark: str = "") -> str:
        flag = "  ERROR" if span.error else ""
        return (
            f"{(span.start_ns - start) / 1e6:>8.1f}ms {span.duration_ms:>8.1f}ms  "
            f"{span.service.ljust(width)}  {'  ' * depth}{mark}{span.name}{flag}"
        )

    def walk(span: Span, depth: int) -> None:
        lines.append(line(span, depth))
        for other in sorted(trace.linked.get(span.span_id, ()), key=lambda s: s.start_ns):
            count = other.attributes.get("messaging.batch.message_count")
            note = f" (a batch of {count}, its own trace)" if count is not None else ""
            lines.append(line(other, depth + 1, "~> ") + note)
        for child in sorted(children.get(span.span_id, ()), key=lambda s: s.start_ns):
            walk(child, depth + 1)

    for root in sorted(children[None], key=lambda s: s.start_ns):
        if root.parent_id is not None:
            lines.append(f"{'':>22}  {''.ljust(width)}  (parent {root.parent_id} not exported yet)")
        walk(root, 0)
    return lines


def find_trace(directory: Path, key: str, wait: float = 0.0, settle: float = 1.0) -> Trace | None:
    """The trace ``key`` names, read from ``directory``. With ``wait``, look again until
    it is found and has not grown for ``settle`` seconds (processes export every few
    hundred milliseconds), at most ``wait`` seconds."""
    deadline = time.monotonic() + wait
    found: Trace | None = None
    stable_since = time.monotonic()
    while True:
        spans = read_spans(directory)
        trace_ids = trace_ids_for(spans, key)
        current = trace_of(spans, trace_ids[0]) if trace_ids else None
        now = time.monotonic()
        if current is None or found is None or len(current.spans) != len(found.spans):
            stable_since = now
        found = current
        if now >= deadline or (found is not None and found.spans and now - stable_since >= settle):
            return found if found is not None and found.spans else None
        time.sleep(min(0.2, max(0.0, deadline - now)))


def trace_command(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        print(f"no spans in {directory}: is the stack running with tracing (`cqrs run`)?")
        return 1
    found = find_trace(directory, args.key, wait=args.wait)
    if found is None:
        print(f"no trace for {args.key} in {directory}")
        return 1
    print("\n".join(render(found)))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="print one trace of the local stack as a tree (ORDER_ID or TRACE_ID)",
        description="Print a trace from var/traces/ (the local stack's spans) as a tree "
        "with timings: by its 32-hex-digit id, or an order's (any aggregate's or "
        "correlation) id.",
    )
    parser.add_argument("key", metavar="ORDER_ID|TRACE_ID")
    default = os.environ.get("TRACES_DIR") or (
        Path(os.environ["DEVSTACK_VAR_DIR"]) / "traces"
        if os.environ.get("DEVSTACK_VAR_DIR")
        else DEFAULT_DIR
    )
    parser.add_argument(
        "--dir",
        default=str(default),
        help="where the spans are: $TRACES_DIR, else $DEVSTACK_VAR_DIR/traces (%(default)s)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="look again until the trace is found and stops growing, at most this long",
    )
    parser.set_defaults(handler=trace_command)
