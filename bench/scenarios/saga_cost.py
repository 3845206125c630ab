"""saga_cost: what tracing and metrics cost the saga's capacity, each set-up searched again and again.

Issue 16 allows tracing and metrics at most 10 % each of the saga's capacity. One
capacity search per set-up (as the tracing scenario runs) cannot tell
that on this 2-core machine: with the knee bisected to within 10 %, one run found 13.75
orders/s with tracing off, 10 with every span and 6.88 with every span but SQLAlchemy's
(which does less), and tracing off has passed 20 in other runs; at these rates the
14 processes use both cores, so the p99 that decides a step moves with whatever else runs.

So three set-ups are each searched `ROUNDS` times, taking turns (`tracing.turns`), every
search on a new system (stores, broker), the knee bisected to within 10 %
(`saga.REFINED`):
- neither tracing nor metrics;
- metrics only (the default, tracing off);
- production: metrics, and one order in ten traced without SQLAlchemy's spans, exported as
  OTLP to a stand-in collector (`bench.otlp_receiver`).

Compared by their median knees, and by the median CPU the system's processes use per
order at `CPU_RATE` (what each set-up adds to the saga's work, whether that step passed):
metrics (metrics only ÷ neither), tracing (production ÷ metrics only), and both
(production ÷ neither).

The knees could not decide 10 % here (six searches each left 90 % intervals of about
0.6-1.5): `saga_pairs` measures the same costs with two systems side by side, by their
CPU per order, and is the verdict read for the saga (ADR 36).
"""

from bench import capacity, stats
from bench.scenario import BenchContext, Measurement, ScenarioResult, Table
from bench.scenarios import saga, tracing

NEITHER, METRICS, PRODUCTION = "neither", "metrics only", "production"
SET_UPS = {NEITHER: tracing.NEITHER, METRICS: tracing.OFF, PRODUCTION: tracing.SAMPLED_OTLP}
"""Each set-up's variant of the tracing scenario (its environment)."""
COMPARISONS = {
    "metrics": (NEITHER, METRICS),
    "tracing": (METRICS, PRODUCTION),
    "tracing and metrics": (NEITHER, PRODUCTION),
}
"""What each comparison costs: ``(without, with)``."""
ROUNDS = 6
"""Searches per set-up: a multiple of the three set-ups, so each runs first, second and
last equally often."""
CPU_RATE = 10.0
"""orders/s: the step whose CPU per order is compared (every search offers it)."""
TARGET_RATIO = tracing.TARGET_RATIO


def run(context: BenchContext) -> ScenarioResult:
    result = ScenarioResult(name="saga_cost: what tracing and metrics cost the saga's capacity")
    plan = saga.QUICK if context.quick else saga.REFINED
    rounds = 1 if context.quick else ROUNDS
    cpu_rate = plan.rates[0] if context.quick else CPU_RATE
    searches: dict[str, list[saga.SearchRun]] = {set_up: [] for set_up in SET_UPS}
    with tracing.otlp_receiving(context) as exported:
        for round_number in range(rounds):
            for set_up in tracing.turns(list(SET_UPS), round_number):
                search = tracing.saga_search(context, SET_UPS[set_up], plan, round_number)
                search.label = f"saga, {set_up}, round {round_number + 1}"
                searches[set_up].append(search)
        result.notes.append(exported())

    knees = {set_up: [knee(search) for search in runs] for set_up, runs in searches.items()}
    work = {
        set_up: [w for search in runs if (w := orders_per_cpu_second(search, cpu_rate))]
        for set_up, runs in searches.items()
    }
    measures = (
        (f"saga capacity (median knee of {rounds})", knees, "orders/s", "saga capacity (knee)"),
        (
            f"saga: orders per CPU-second of its processes at {cpu_rate:g}/s (median of {rounds})",
            work,
            "orders/CPU-s",
            "saga, CPU per order",
        ),
    )
    verdicts = []
    for compared, (without, with_) in COMPARISONS.items():
        for what, values, unit, target in measures:
            if not (values[with_] and values[without]):
                continue
            measured = Measurement(
                f"{what}, {compared}: {with_} ÷ {without}, SQLite",
                stats.median(values[with_]),
                unit,
                without,
                stats.median(values[without]),
            )
            result.measurements.append(measured)
            verdicts.append(
                (
                    *tracing.target_row(f"{target}, {compared}", measured.ratio),
                    *interval(values[with_], values[without]),
                )
            )
    result.tables.append(
        Table(
            f"Every search ({plan.seconds:g} s per rate; rates "
            f"{', '.join(f'{r:g}' for r in plan.rates)} orders/s"
            + (f", then bisected to within {plan.refine * 100:g} %" if plan.refine else "")
            + ")",
            ("set-up", *(f"round {n + 1}" for n in range(rounds)), "median"),
            [
                (
                    f"{set_up}: knee, orders/s",
                    *(f"{k:g}" for k in knees[set_up]),
                    f"{stats.median(knees[set_up]):g}",
                )
                for set_up in SET_UPS
            ]
            + [
                (
                    f"{set_up}: orders per CPU-second at {cpu_rate:g}/s",
                    *(f"{w:.1f}" for w in work[set_up]),
                    f"{stats.median(work[set_up]):.1f}" if work[set_up] else "-",
                )
                for set_up in SET_UPS
            ],
        )
    )
    result.tables.append(
        Table(
            f"Issue 16's target: with ÷ without at least {TARGET_RATIO:g} (at most 10 % cost)",
            ("what", "with ÷ without", "target", "verdict", "90 % interval", "decided?"),
            verdicts,
        )
    )
    result.notes.append(
        "The interval of each ratio of medians is a bootstrap's (each set-up's searches "
        "drawn again with replacement, 4,000 times, seeded): where it holds the target "
        f"{TARGET_RATIO:g} inside, {rounds} search{'es' if rounds > 1 else ''} per set-up "
        "did not decide the verdict, "
        "whichever way the median reads."
    )
    return result


def interval(with_: list[float], without: list[float]) -> tuple[str, str]:
    """The 90 % interval of ``median(with_) / median(without)`` and whether it decides
    the verdict (one search a side is no interval at all)."""
    if min(len(with_), len(without)) < 2:
        return "-", "no: one search"
    low, high = stats.ratio_interval(with_, without)
    return f"{low:.2f}-{high:.2f}", resolved(low, high)


def resolved(low: float, high: float) -> str:
    """Whether a ratio's interval lies wholly on one side of the target."""
    if low >= TARGET_RATIO:
        return "yes: holds"
    if high < TARGET_RATIO:
        return "yes: missed"
    return "no"


def knee(search: saga.SearchRun) -> float:
    """The search's knee (0 when its first rate failed)."""
    return capacity.knee(search.steps) or 0.0


def orders_per_cpu_second(search: saga.SearchRun, rate: float) -> float | None:
    """Orders approved per CPU-second of the system's processes at ``rate`` (None if the
    search never offered it)."""
    step = next((s for s in search.steps if s.offered == rate and s.latencies), None)
    return None if step is None else tracing.orders_per_cpu_second(search, step)
