"""tracing: what tracing costs on the write path and on the saga's capacity (on vs OTEL_SDK_DISABLED=true).

Issue 16 allows tracing at most 10 % of each. Every variant runs the same processes with
the same settings, spans exported as OTLP JSON lines to files
(`OTEL_TRACES_EXPORTER=otlp_json_file`, the local stack's set-up) except where a variant
says otherwise; they differ in `VARIANTS`: off (`OTEL_SDK_DISABLED=true`: no provider,
the kernel's span calls are no-ops), every span, every span but SQLAlchemy's, one order
in ten sampled (`parentbased_traceidratio`, 0.1), one in ten without SQLAlchemy's, and
that last one sending OTLP protobuf over HTTP (`OTEL_TRACES_EXPORTER=otlp`, production's
exporter) to a receiver that keeps nothing (`bench.otlp_receiver`, its own process: a
collector's work is not the exporting process's). Metrics are on in each; two more
comparisons set the production set-ups (one in ten without SQLAlchemy's spans, metrics
on; JSON lines and OTLP) against neither tracing nor metrics (`METRICS_ENABLED=false`):
issue 16 asks what tracing *and* metrics cost.

- Write path: the orders command API (uvicorn, SQLite; PostgreSQL too in a full run when
  it is there), `POST /orders` by closed-loop clients, as in the write_path scenario, in
  pairs: a fresh process with tracing off beside a fresh one with it on, each with half
  the clients, at the same time (this machine's speed moves by 10-20 % between two runs;
  the two sides of a pair share the moment). Five pairs for each way tracing is on, the
  ways taking turns; the median pair is reported, and every pair's ratios in a note.
  Ratios to off: commands/s, and commands per CPU-second of the API process.
- Write path, in instructions: the orders API's app in one process (`bench.api_probe`,
  SQLite), POST /orders run under callgrind (`bench.instructions`): the instructions one
  command costs, the baseline and the set-up of each comparison counted side by side;
  the ratio off / on is the share of the work left when tracing is on. Only counts taken
  at the same moment compare: tracing off counted 3.4 M in one full run and 4.7 M in
  another (the group commit's batch sizes follow thread timing under callgrind;
  docs/observability.md).
  Needs valgrind (skipped without it, and in a quick run).
- Saga: the whole system (14 processes, SQLite stores), its capacity searched as in the
  saga scenario (`bench.scenarios.saga`), once per variant, the knee bisected to within
  10 % (`saga.REFINED`). Ratios to off: the knees (the highest rate passed below the
  lowest failed), and the orders approved per
  CPU-second of the system's processes at the highest rate both passed (on a 2-core
  machine the saga's capacity is bound by its CPU).
"""

import asyncio
import contextlib
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from bench import capacity, instructions, otlp_receiver, stack
from bench.pairs import Pair, api_pair, median_pair
from bench.scenario import BenchContext, Measurement, ScenarioResult, Table
from bench.scenarios import saga, write_path

OFF = "off"
NEITHER = "neither tracing nor metrics"
SAMPLED = "10 % sampled without SQL spans"
"""The cheapest way tracing is on, the one docs/observability.md advises in production."""
SAMPLED_OTLP = f"{SAMPLED}, OTLP"
"""The same, exported as in production: OTLP protobuf over HTTP, to ``bench.otlp_receiver``
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, set by ``run``)."""
VARIANTS: dict[str, dict[str, str]] = {
    OFF: {"OTEL_SDK_DISABLED": "true"},
    "every span": {},
    "no SQL spans": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy"},
    "10 % of orders sampled": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    SAMPLED: {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy",
    },
    SAMPLED_OTLP: {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy",
    },
    NEITHER: {"OTEL_SDK_DISABLED": "true", "METRICS_ENABLED": "false"},
}
"""Tracing off, and the ways it is on (metrics on in each, as by default), and neither
tracing nor metrics. The ways tracing is on: every span (the local stack's set-up), without
SQLAlchemy's span per statement, with one order in ten traced (the root's decision
is the whole order's: the sampled flag travels in ``traceparent``), and both (the
cheapest: the orders API's statements run in its group commit's threads, outside any
request's trace, so SQLAlchemy's instrumentation records nothing there), and that sent as
OTLP rather than written as JSON lines."""
COMPARISONS: dict[str, tuple[str, str]] = {
    **{variant: (OFF, variant) for variant in VARIANTS if variant not in (OFF, NEITHER)},
    f"{SAMPLED}, and metrics": (NEITHER, SAMPLED),
    f"{SAMPLED_OTLP}, and metrics": (NEITHER, SAMPLED_OTLP),
}
"""What is compared, each ``(baseline, set-up)``: each way tracing is on with tracing
off, and the production set-ups (tracing sampled, metrics on) with neither."""
BASELINES = {OFF: "tracing off (OTEL_SDK_DISABLED=true)", NEITHER: "neither tracing nor metrics"}
TARGET_RATIO = 0.9
"""Issue 16: tracing costs at most 10 % of the write path's throughput and of the saga's
capacity."""


def tracing_env(variant: str, work: os.PathLike[str] | str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp_json_file",
        "OTEL_SDK_DISABLED": "false",
        "TRACES_DIR": f"{work}/traces",
        **VARIANTS[variant],
    }


def write_path_pairs(
    context: BenchContext, url: str, schemas: tuple[str, str] | None, rounds: int, seconds: float
) -> dict[str, list[Pair]]:
    """``rounds`` pairs (baseline beside set-up) for each of the ``COMPARISONS``, taking
    turns."""
    clients = 4 if context.quick else write_path.CLIENTS // 2
    pairs: dict[str, list[Pair]] = {compared: [] for compared in COMPARISONS}

    def env(variant: str, schema: str | None) -> dict[str, str]:
        return {
            "ORDERS_DATABASE_URL": url.format(uuid.uuid4().hex[:8]),
            **({"ORDERS_DATABASE_SCHEMA": schema} if schema else {}),
            **tracing_env(variant, context.work_dir),
        }

    off_schema, on_schema = schemas or (None, None)
    for round_number in range(rounds):
        for compared in turns(list(COMPARISONS), round_number):
            baseline, variant = COMPARISONS[compared]
            pairs[compared].append(
                api_pair(
                    env(baseline, off_schema),
                    env(variant, on_schema),
                    context.work_dir,
                    clients,
                    seconds,
                )
            )
    return pairs


def turns(variants: list[str], round_number: int) -> list[str]:
    """The order the variants run in a round: each round starts one further along, so
    no variant is always the first (or the last) on the machine."""
    start = round_number % len(variants)
    return variants[start:] + variants[:start]


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment meanwhile: the processes the saga
    scenario starts inherit it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def saga_search(
    context: BenchContext, variant: str, plan: saga.Plan, round_number: int = 0
) -> saga.SearchRun:
    """A capacity search of the whole system with ``variant``'s tracing, its stores and
    broker new (a directory of its own for each variant and round)."""
    slug = variant.replace(" ", "-").replace("%", "pc").replace(",", "")
    work = context.work_dir / f"tracing-{slug}" / f"round-{round_number}"
    work.mkdir(parents=True, exist_ok=True)
    with environment(tracing_env(variant, work)):
        run = asyncio.run(
            saga.measure_saga(dataclasses.replace(context, work_dir=work), "SQLite", plan)
        )
    run.label = f"saga, tracing {variant}"
    return run


def orders_per_cpu_second(run: saga.SearchRun, step: capacity.Step) -> float:
    """Orders approved per CPU-second the system's processes used above idle (its broker,
    SecantusDB and the bench process left out)."""
    work = saga.work_per_order_ms(run, step)
    system_ms = sum(ms for name, ms in work.items() if name not in saga.SERVERS)
    return 1000 / system_ms if system_ms > 0 else float("nan")


INSTRUCTION_COUNTS = (64, 576)
"""POST /orders per callgrind run: the difference (512 commands) is what is measured."""


def instructions_per_command(context: BenchContext) -> dict[str, tuple[float, float]]:
    """Each comparison's instructions per POST /orders, ``(baseline, set-up)``, the two
    counted side by side (2 cores): a count moves with the group commit's batch sizes,
    which follow the thread timing under callgrind, so only counts taken at the same
    moment compare (one run counted tracing off 4.17 M and neither tracing nor metrics
    4.49 M, each beside another variant)."""
    work = context.work_dir / "instructions"
    auth_dir = context.work_dir / "auth"  # the runner's identity (bench.http)

    def count(compared: str, variant: str) -> float:
        slug = f"{compared}-{variant}".replace(" ", "-").replace("%", "pc").replace(",", "")

        def env_of(commands: int) -> dict[str, str]:
            return {
                "ORDERS_DATABASE_URL": f"sqlite:///{work}/{slug}-{commands}.db",
                **tracing_env(variant, work),
            }

        few, many = INSTRUCTION_COUNTS
        return instructions.per_operation(
            "bench.api_probe", [str(auth_dir)], env_of, work, slug, few, many
        )

    counted: dict[str, tuple[float, float]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for compared, (baseline, variant) in COMPARISONS.items():
            off, on = pool.map(count, [compared, compared], [baseline, variant])
            counted[compared] = (off, on)
    return counted


def run(context: BenchContext) -> ScenarioResult:
    with otlp_receiving(context) as exported:
        result = measure(context)
    result.notes.append(exported())
    return result


@contextlib.contextmanager
def otlp_receiving(context: BenchContext) -> Iterator[Callable[[], str]]:
    """An OTLP receiver up for the variant that exports to one (the processes started
    meanwhile inherit its endpoint); yields what says, in a note, what it took."""
    with otlp_receiver.running(context.work_dir) as receiver:
        endpoint = f"{receiver}{otlp_receiver.TRACES_PATH}"

        def exported() -> str:
            exports = otlp_receiver.exports(receiver)
            return f"The OTLP receiver took {exports} exports" + (
                "." if exports else ": NONE, so the OTLP variant's numbers measured no export."
            )

        with environment({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}):
            yield exported


def measure(context: BenchContext) -> ScenarioResult:
    result = ScenarioResult(name="tracing: its cost on the write path and the saga")
    seconds = 1.5 if context.quick else 6.0
    rounds = 2 if context.quick else 5
    targets_rows: list[tuple[str, ...]] = []

    stores: list[tuple[str, str, tuple[str, str] | None]] = [
        ("SQLite", f"sqlite:///{context.work_dir}/tracing_{{}}.db", None)
    ]
    with contextlib.ExitStack() as cleanup:
        if not context.quick and stack.postgres_available(context.postgres_url):
            schemas = tuple(
                cleanup.enter_context(stack.postgres_schema(context.postgres_url))
                for _ in ("off", "on")
            )
            stores.append(("PostgreSQL", context.postgres_url, (schemas[0], schemas[1])))
        for store, url, store_schemas in stores:
            pairs_of = write_path_pairs(context, url, store_schemas, rounds, seconds)
            for variant, (baseline, _) in COMPARISONS.items():
                pairs = pairs_of[variant]
                by_throughput = median_pair(pairs, lambda pair: pair.throughput_ratio)
                by_cpu = median_pair(pairs, lambda pair: pair.cpu_ratio)
                throughput = Measurement(
                    f"POST /orders commands/s, tracing: {variant}, {store} "
                    "(the median of the pairs)",
                    by_throughput.on.run.per_second,
                    "commands/s",
                    f"{BASELINES[baseline]}, beside it",
                    by_throughput.off.run.per_second,
                    by_throughput.on.run.p50,
                    by_throughput.on.run.p95,
                    by_throughput.on.run.p99,
                )
                per_cpu = Measurement(
                    f"POST /orders commands per CPU-second of the API process, "
                    f"tracing: {variant}, {store} (the median of the pairs)",
                    1000 / by_cpu.on.cpu_ms_per_command,
                    "commands/CPU-s",
                    f"{BASELINES[baseline]}, beside it",
                    1000 / by_cpu.off.cpu_ms_per_command,
                )
                result.measurements += [throughput, per_cpu]
                targets_rows += [
                    target_row(f"write path, commands/s, {variant}, {store}", throughput.ratio),
                    target_row(f"write path, CPU per command, {variant}, {store}", per_cpu.ratio),
                ]
                result.notes.append(
                    f"Write path, {store}, tracing {variant}: ÷ {BASELINES[baseline]} in each "
                    "of the "
                    f"{len(pairs)} pairs, commands/s "
                    + ", ".join(f"{pair.throughput_ratio:.2f}" for pair in pairs)
                    + "; CPU per command (off ÷ on) "
                    + ", ".join(f"{pair.cpu_ratio:.2f}" for pair in pairs)
                    + "."
                )

    if context.quick or not instructions.available():
        result.notes.append(
            "Instructions per command: not counted ("
            + ("a quick run" if context.quick else "no valgrind on this machine")
            + ")."
        )
    else:
        counted = instructions_per_command(context)
        for compared, (baseline, _) in COMPARISONS.items():
            off, on = counted[compared]
            per_command = Measurement(
                f"POST /orders: instructions per command, {BASELINES[baseline]} as a share "
                f"of {compared}, counted beside it, SQLite, one process (callgrind)",
                off / 1e6,
                "M instructions",
                f"tracing: {compared}",
                on / 1e6,
            )
            result.measurements.append(per_command)
            targets_rows.append(
                target_row(f"write path, instructions per command (off / on), {compared}", off / on)
            )

    plan = saga.QUICK if context.quick else saga.REFINED
    searches = {variant: saga_search(context, variant, plan) for variant in VARIANTS}
    for compared, (baseline, variant) in COMPARISONS.items():
        search, untraced = searches[variant], searches[baseline]
        knee_on, knee_off = capacity.knee(search.steps), capacity.knee(untraced.steps)
        result.measurements.append(
            Measurement(
                f"saga capacity (knee), tracing: {compared}, SQLite",
                knee_on or 0.0,
                "orders/s",
                BASELINES[baseline],
                knee_off,
            )
        )
        knee_ratio = (knee_on / knee_off) if knee_on and knee_off else None
        targets_rows.append(target_row(f"saga capacity (knee), {compared}", knee_ratio))
        both = [
            (a, b)
            for a, b in zip(search.steps, untraced.steps, strict=False)
            if a.offered == b.offered and a.latencies and b.latencies
        ]
        passed = [
            (a, b) for a, b in both if not capacity.shortfalls(a) and not capacity.shortfalls(b)
        ]
        if not both:
            result.notes.append(f"{compared}: no rate where orders were approved both ways.")
            continue
        # The highest rate both passed; else (a busy machine) the first, passed or not:
        # the work per approved order holds either way.
        step_on, step_off = passed[-1] if passed else both[0]
        cpu = Measurement(
            f"saga: orders per CPU-second of its processes at {step_on.offered:g} orders/s, "
            f"tracing: {compared}, SQLite",
            orders_per_cpu_second(search, step_on),
            "orders/CPU-s",
            BASELINES[baseline],
            orders_per_cpu_second(untraced, step_off),
            (step_on.p(50) or 0) * 1000,
            (step_on.p(95) or 0) * 1000,
            (step_on.p(99) or 0) * 1000,
        )
        result.measurements.append(cpu)
        targets_rows.append(target_row(f"saga, CPU per order, {compared}", cpu.ratio))
        result.notes.append(
            f"Saga at {step_on.offered:g} orders/s, tracing {compared}: p50 placed → APPROVED "
            f"{_ms(step_on.p(50))} ms ({_ms(step_off.p(50))} ms with {BASELINES[baseline]}), p99 "
            f"{_ms(step_on.p(99))} ms ({_ms(step_off.p(99))} ms)."
        )
    result.tables.append(
        Table(
            f"Issue 16's target: tracing on ÷ off at least {TARGET_RATIO:g} (at most 10 % cost)",
            ("what", "on ÷ off", "target", "verdict"),
            targets_rows,
        )
    )
    result.notes.append(
        "The knee is as fine as the search: its steps "
        f"({', '.join(f'{r:g}' for r in plan.rates)} orders/s)"
        + (f", then bisected to within {plan.refine * 100:g} %" if plan.refine else "")
        + ": the CPU per order is the finer measure of what tracing adds to the saga's work "
        "(on a 2-core machine its capacity is bound by CPU). CPU per command or order is "
        "read from /proc: it holds better than throughput when other work shares the machine."
    )
    return result


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def target_row(what: str, ratio: float | None) -> tuple[str, ...]:
    if ratio is None:
        return (what, "-", f">= {TARGET_RATIO:g}", "not measured")
    verdict = "holds" if ratio >= TARGET_RATIO else "MISSED"
    return (what, f"{ratio:.2f}", f">= {TARGET_RATIO:g}", verdict)
