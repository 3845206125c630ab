"""What a benchmark scenario returns, and what it is given.

A scenario is a module in ``bench/scenarios/`` with a function
``run(context: BenchContext) -> ScenarioResult`` (or an ``async def run``). It measures
the project's path and a raw baseline (the same work done with the bare library or
driver) in the same run, so the report can show ratios: absolute numbers mean little on
a noisy 2-core machine.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BenchContext:
    """The servers a scenario may use, all on 127.0.0.1, started by the runner."""

    kafka_bootstrap: str  # "127.0.0.1:PORT" of a noida-db broker
    mongo_url: str  # "mongodb://127.0.0.1:PORT/?directConnection=true" (SecantusDB)
    postgres_url: str  # "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    work_dir: Path  # scratch space for SQLite files, logs, data
    image_dir: Path  # where charts go (docs/img/)
    quick: bool = False  # smaller workloads (for a smoke run in the tests)


@dataclass(frozen=True)
class Measurement:
    """One line of a scenario's table: a value beside its raw baseline."""

    what: str  # e.g. "commands/s, PostgreSQL, 16 clients"
    value: float
    unit: str  # e.g. "events/s", "ms"
    baseline_name: str | None = None  # e.g. "raw bulk_write"
    baseline: float | None = None
    # Latency distributions, in milliseconds, where the line measures latency.
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        """value / baseline (for throughputs, higher is better)."""
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline


@dataclass(frozen=True)
class Table:
    """A table of its own in a scenario's section (e.g. one row per offered rate), for
    what does not fit the value-beside-baseline rows."""

    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass
class ScenarioResult:
    name: str  # e.g. "write path"
    measurements: list[Measurement] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)  # after the measurements
    notes: list[str] = field(default_factory=list)  # what dominates (profile), caveats
    charts: list[Path] = field(default_factory=list)  # PNGs under context.image_dir
