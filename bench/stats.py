"""Percentiles and rates over measured samples (no numpy needed for the arithmetic)."""

import math
import random
import statistics
from collections.abc import Sequence
from typing import TypedDict


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Percentiles(TypedDict):
    p50_ms: float
    p95_ms: float
    p99_ms: float


def percentiles_ms(samples_s: Sequence[float]) -> Percentiles:
    """p50/p95/p99 in milliseconds of samples in seconds, as `Measurement` keywords."""
    return Percentiles(
        p50_ms=percentile(samples_s, 50) * 1000,
        p95_ms=percentile(samples_s, 95) * 1000,
        p99_ms=percentile(samples_s, 99) * 1000,
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio_interval(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    level: float = 0.9,
    resamples: int = 4000,
    seed: int = 0,
) -> tuple[float, float]:
    """A bootstrap interval of ``median(numerators) / median(denominators)``: both sets
    drawn again with replacement, ``resamples`` times, and the middle ``level`` of the
    ratios kept. How far the ratio of two medians of a few noisy runs can be read: when
    the interval holds both sides of a target, the runs did not decide it. Seeded, so a
    report is the same for the same runs."""
    draw = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        top = statistics.median(draw.choices(numerators, k=len(numerators)))
        bottom = statistics.median(draw.choices(denominators, k=len(denominators)))
        ratios.append(top / bottom if bottom else math.inf)
    return _middle(ratios, level)


def median_interval(
    values: Sequence[float], *, level: float = 0.9, resamples: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap interval of ``median(values)``, as ``ratio_interval``: for ratios
    measured in pairs (each pair's two sides at the same moment), whose median is read
    directly."""
    draw = random.Random(seed)
    medians = [statistics.median(draw.choices(values, k=len(values))) for _ in range(resamples)]
    return _middle(medians, level)


def _middle(samples: Sequence[float], level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    return percentile(samples, tail), percentile(samples, 100 - tail)


def spread(values: Sequence[float]) -> str:
    """`min–max` of repeated measurements, for the notes (how noisy the machine was)."""
    return f"{min(values):,.0f}–{max(values):,.0f}"


def paired_ratios(values: Sequence[float], baselines: Sequence[float]) -> str:
    """Each round's value / baseline: rounds ran back to back, so each pair saw about
    the same machine load, which the medians of the two columns do not guarantee."""
    return ", ".join(f"{v / b:.2f}" for v, b in zip(values, baselines, strict=True) if b)
