"""Percentiles and rates over measured samples (no numpy needed for the arithmetic)."""

import math
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


def spread(values: Sequence[float]) -> str:
    """`min–max` of repeated measurements, for the notes (how noisy the machine was)."""
    return f"{min(values):,.0f}–{max(values):,.0f}"


def paired_ratios(values: Sequence[float], baselines: Sequence[float]) -> str:
    """Each round's value / baseline: rounds ran back to back, so each pair saw about
    the same machine load, which the medians of the two columns do not guarantee."""
    return ", ".join(f"{v / b:.2f}" for v, b in zip(values, baselines, strict=True) if b)
