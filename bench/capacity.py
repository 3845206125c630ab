"""A capacity search: offered rates stepped up until the pipeline stops keeping up.

Each step offers orders at one rate (open loop) for a fixed time and times each order
from its acceptance until it is done (APPROVED in the read model). A step passes when
every order placed was done, the p99 of those latencies is under `P99_LIMIT`, and
completions kept up with the offer (`completion_rate` at least `KEEP_UP` of it).
Stepping stops at the first step that fails: the rates above it would only pile up a
backlog. The knee is the highest rate that passed below the lowest that failed. The steps
(5, 10, 20, 50 ...) double: a search asked to ``refine`` then bisects between the last rate
passed and the first failed until they are that share apart, so that two set-ups a few per
cent apart in capacity are not told apart by a factor of two.
"""

import math
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bench import stats
from bench.flows import Flow

P99_LIMIT = 1.0  # seconds, accepted → done
KEEP_UP = 0.9  # completed/s at least this share of the rate offered


@dataclass
class Step:
    """One offered rate's outcome."""

    offered: float  # orders/s
    seconds: float  # how long orders were offered
    latencies: list[float]  # seconds, accepted → done, of the orders done
    done_at: list[float]  # seconds from the first order's due time, each order done
    accepted: int
    errors: int  # orders not accepted
    pending: int  # accepted, still not done at the drain deadline
    accept_latencies: list[float]  # seconds from due time to accepted
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per process, this step
    run_queue_seconds: dict[str, float] = field(default_factory=dict)  # waited for a core
    messages: dict[str, int] = field(default_factory=dict)  # per topic, where counted
    wall_seconds: float = 0.0  # from the step's start until its last order was done
    load_average: float | None = None  # the machine's, 1 minute, at the step's end

    @classmethod
    def of(cls, rate: float, seconds: float, flow: Flow) -> "Step":
        return cls(
            offered=rate,
            seconds=seconds,
            latencies=list(flow.effect),
            done_at=[c.seen - flow.started for c in flow.completions],
            accepted=len(flow.accepted.latencies),
            errors=flow.accepted.errors,
            pending=flow.missing,
            accept_latencies=list(flow.accepted.latencies),
        )

    @property
    def completed_rate(self) -> float:
        return completion_rate(self.done_at, self.seconds)

    def p(self, q: float) -> float | None:
        """The q-th percentile latency of the orders done (seconds)."""
        return stats.percentile(self.latencies, q) if self.latencies else None


def completion_rate(done_at: Sequence[float], seconds: float) -> float:
    """Orders done per second in the step's steady state: those done during the last two
    thirds of the offering (the first third lets the pipeline fill), over that time.

    A pipeline that keeps up completes at the offered rate; one that falls behind, at
    its capacity, whatever is offered.
    """
    start, end = seconds / 3, seconds
    if end <= start:
        return 0.0
    return sum(start <= t <= end for t in done_at) / (end - start)


def shortfalls(step: Step, p99_limit: float = P99_LIMIT, keep_up: float = KEEP_UP) -> list[str]:
    """Why the step failed (nothing if it passed)."""
    reasons = []
    if step.errors:
        reasons.append(f"{step.errors} not accepted")
    if step.pending:
        reasons.append(f"{step.pending} not done by the deadline")
    p99 = step.p(99)
    if p99 is None:
        reasons.append("none done")
    elif p99 >= p99_limit:
        reasons.append(f"p99 {p99:.2f} s ≥ {p99_limit:g} s")
    if step.completed_rate < keep_up * step.offered:
        reasons.append(f"{step.completed_rate:.1f}/s done < {keep_up:g} × offered")
    return reasons


def knee(steps: Iterable[Step]) -> float | None:
    """The highest offered rate that passed below the lowest that failed (None if none
    did)."""
    steps = list(steps)
    lowest_failed = min((s.offered for s in steps if shortfalls(s)), default=math.inf)
    passed = [s.offered for s in steps if s.offered < lowest_failed and not shortfalls(s)]
    return max(passed, default=None)


def every_rate_passed(steps: Sequence[Step]) -> bool:
    """No step failed: the knee is only a lower bound."""
    return bool(steps) and not any(shortfalls(step) for step in steps)


def capacity_text(steps: Sequence[Step]) -> str:
    """`50 orders/s`, or a bound when the search ended without a knee in range."""
    found = knee(steps)
    if found is None:
        return f"< {steps[0].offered:g} orders/s" if steps else "not measured"
    if every_rate_passed(steps):
        return f"≥ {found:g} orders/s (every rate passed)"
    return f"{found:g} orders/s"


def capacity_ratio(steps: Sequence[Step], baseline: Sequence[Step]) -> tuple[float | None, str]:
    """knee / baseline's knee, and how to read it: "" when both knees were found; "<"
    when this search failed its first rate (the ratio of that rate is an upper bound);
    "≤" or "≥" when one search passed every rate (its knee is only a lower bound). None
    when it cannot be told."""
    mine, theirs = knee(steps), knee(baseline)
    if theirs is None:
        return None, ""
    if mine is None:
        return (steps[0].offered / theirs, "<") if steps else (None, "")
    mine_bounded = every_rate_passed(steps)
    theirs_bounded = every_rate_passed(baseline)
    if mine_bounded and theirs_bounded:
        return None, ""
    if theirs_bounded:
        return mine / theirs, "≤"
    if mine_bounded:
        return mine / theirs, "≥"
    return mine / theirs, ""


def at_least(value: float, bound: str, target: float) -> bool | None:
    """Whether a value read as `bound` ("" exact, "≥" a lower bound, "<" or "≤" an upper
    bound) is at least `target`; None when the bound cannot tell."""
    if bound == "":
        return value >= target
    if bound == "≥":
        return True if value >= target else None
    return False if value < target else None


async def search(
    rates: Iterable[float],
    measure: Callable[[float], Awaitable[Step]],
    *,
    refine: float | None = None,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> list[Step]:
    """Measure each rate in turn; stop after the first step that fails. With ``refine``
    (a share, 0.1: within 10 %), then bisect between the last rate passed and the first
    failed until they are at most that share of the lower apart, awaiting ``settle``
    before each of those steps (a failed step leaves a backlog)."""
    steps: list[Step] = []
    for rate in rates:
        step = await measure(rate)
        steps.append(step)
        if shortfalls(step):
            break
    passed, failed = knee(steps), steps[-1].offered if steps else None
    if refine is None or passed is None or failed is None or every_rate_passed(steps):
        return steps
    while failed - passed > refine * passed:
        if settle is not None:
            await settle()
        rate = round((passed + failed) / 2, 2)
        step = await measure(rate)
        steps.append(step)
        if shortfalls(step):
            failed = rate
        else:
            passed = rate
    return steps


class OrderMix:
    """Who orders where: `consumers` customers, the first `hot` of them placing
    `hot_share` of the orders between them, over `restaurants` restaurants.
    Deterministic (seeded), so two systems get the same sequence."""

    def __init__(
        self,
        consumers: Sequence[str],
        restaurants: Sequence[str],
        hot: int = 3,
        hot_share: float = 0.5,
        seed: int = 13,
    ):
        if not 0 < hot < len(consumers):
            raise ValueError("hot must be between 0 and the number of consumers")
        self.consumers = list(consumers)
        self.restaurants = list(restaurants)
        self.hot = hot
        self.hot_share = hot_share
        self._random = random.Random(seed)

    def next(self) -> tuple[str, str]:
        """The next order's (consumer, restaurant)."""
        if self._random.random() < self.hot_share:
            consumer = self._random.choice(self.consumers[: self.hot])
        else:
            consumer = self._random.choice(self.consumers[self.hot :])
        return consumer, self._random.choice(self.restaurants)
