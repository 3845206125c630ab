"""PNG charts for the report: latency histograms and throughput over time (matplotlib, Agg)."""

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt

Series = Mapping[str, Sequence[float]]


def latency_histogram(path: Path, title: str, latencies_s: Series) -> Path:
    """One histogram per series (milliseconds), overlaid, with each p50 and p99 marked."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for label, samples in latencies_s.items():
        if not samples:
            continue
        millis = sorted(s * 1000 for s in samples)
        axes.hist(millis, bins=50, alpha=0.55, label=f"{label} (n={len(millis)})")
        for q, style in ((50, "-"), (99, "--")):
            value = millis[min(len(millis) - 1, int(len(millis) * q / 100))]
            axes.axvline(value, linestyle=style, linewidth=1, color="black", alpha=0.6)
    axes.set_xlabel("latency (ms); solid line p50, dashed p99")
    axes.set_ylabel("requests")
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)


def throughput_over_time(
    path: Path, title: str, progress: Mapping[str, Sequence[tuple[float, int]]], unit: str
) -> Path:
    """Items done over time per series, from `(seconds since start, items done so far)`
    points: the slope is the throughput (batches make a per-interval rate too spiky)."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for label, points in progress.items():
        ordered = sorted(points)
        times, done = [t for t, _ in ordered], [n for _, n in ordered]
        average = done[-1] / times[-1] if times and times[-1] > 0 else 0.0
        axes.step(times, done, where="post", marker=".", label=f"{label}: {average:,.0f} {unit}")
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("done (slope = throughput)")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)


def latency_against_rate(
    path: Path,
    title: str,
    points: Mapping[str, Sequence[tuple[float, float, float]]],
    limit_s: float | None = None,
) -> Path:
    """p50 (solid) and p99 (dashed) latency against the offered rate, one colour per
    series, from `(offered per second, p50 s, p99 s)` points; log scales, and the
    latency limit as a dotted line."""
    figure, axes = plt.subplots(figsize=(10, 4.5))
    for label, series in points.items():
        ordered = sorted(series)
        if not ordered:
            continue
        rates = [rate for rate, _, _ in ordered]
        (line,) = axes.plot(
            rates, [p50 * 1000 for _, p50, _ in ordered], "o-", label=f"{label} p50"
        )
        axes.plot(
            rates,
            [p99 * 1000 for _, _, p99 in ordered],
            "s--",
            color=line.get_color(),
            label=f"{label} p99",
        )
    if limit_s is not None:
        axes.axhline(limit_s * 1000, linestyle=":", color="black", alpha=0.6, label="p99 limit")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("offered orders/s")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
