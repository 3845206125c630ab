"""The tracing benchmark's rounds: no variant always runs first on the machine; pairs
of processes, off beside on, give its ratios."""

from bench.pairs import ApiRun, Pair, median_pair
from bench.scenarios.tracing import (
    COMPARISONS,
    NEITHER,
    OFF,
    SAMPLED,
    SAMPLED_OTLP,
    VARIANTS,
    tracing_env,
    turns,
)
from bench.scenarios.write_path import Run


def test_each_round_starts_with_the_next_variant_and_runs_every_variant_once() -> None:
    variants = list(VARIANTS)

    rounds = [turns(variants, number) for number in range(len(variants) + 1)]

    assert [order[0] for order in rounds] == [*variants, variants[0]]
    assert all(sorted(order) == sorted(variants) for order in rounds)
    assert rounds[1] == [*variants[1:], variants[0]]


def _side(per_second: float, cpu_ms: float) -> ApiRun:
    return ApiRun(Run(int(per_second), 1.0, [0.01]), cpu_ms)


def test_a_pair_compares_its_sides_and_the_median_pair_is_reported() -> None:
    pairs = [
        Pair(off=_side(500, 2.0), on=_side(400, 2.5)),  # 0.80 both ways
        Pair(off=_side(500, 2.0), on=_side(450, 2.2)),  # 0.90, 0.91
        Pair(off=_side(500, 2.0), on=_side(475, 2.1)),  # 0.95, 0.95
    ]

    assert [round(pair.throughput_ratio, 2) for pair in pairs] == [0.8, 0.9, 0.95]
    assert [round(pair.cpu_ratio, 2) for pair in pairs] == [0.8, 0.91, 0.95]
    assert median_pair(list(reversed(pairs)), lambda pair: pair.throughput_ratio) is pairs[1]
    assert median_pair(pairs[:2], lambda pair: pair.cpu_ratio) is pairs[1]


def test_each_way_tracing_is_on_is_set_against_tracing_off_and_the_production_set_up_against_neither() -> (
    None
):
    traced = {variant for variant in VARIANTS if variant not in (OFF, NEITHER)}

    assert {COMPARISONS[variant] for variant in traced} == {(OFF, variant) for variant in traced}
    assert (NEITHER, SAMPLED) in COMPARISONS.values()
    assert (NEITHER, SAMPLED_OTLP) in COMPARISONS.values()
    # Neither means tracing off and metrics off; every other variant leaves metrics on.
    assert VARIANTS[NEITHER] == {"OTEL_SDK_DISABLED": "true", "METRICS_ENABLED": "false"}
    assert all(
        "METRICS_ENABLED" not in VARIANTS[variant] for variant in VARIANTS if variant != NEITHER
    )


def test_the_otlp_variant_is_the_production_set_up_exported_as_otlp_instead_of_json_lines() -> None:
    json_lines, otlp = tracing_env(SAMPLED, "work"), tracing_env(SAMPLED_OTLP, "work")

    assert json_lines["OTEL_TRACES_EXPORTER"] == "otlp_json_file"
    assert otlp["OTEL_TRACES_EXPORTER"] == "otlp"
    assert {k: v for k, v in otlp.items() if k != "OTEL_TRACES_EXPORTER"} == {
        k: v for k, v in json_lines.items() if k != "OTEL_TRACES_EXPORTER"
    }
