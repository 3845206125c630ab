"""The saga_cost benchmark compares what it says it compares. Speed is never asserted here."""

import pytest

from bench import stats
from bench.scenarios import saga, saga_cost
from bench.scenarios.tracing import tracing_env
from tests.reference_saga.unit.test_bench_capacity import step


def _env(set_up: str) -> dict[str, str]:
    return tracing_env(saga_cost.SET_UPS[set_up], "work")


def test_metrics_differ_only_in_metrics_and_tracing_only_in_tracing() -> None:
    without, with_ = (_env(s) for s in saga_cost.COMPARISONS["metrics"])
    assert without["METRICS_ENABLED"] == "false" and "METRICS_ENABLED" not in with_
    assert without["OTEL_SDK_DISABLED"] == with_["OTEL_SDK_DISABLED"] == "true"

    without, with_ = (_env(s) for s in saga_cost.COMPARISONS["tracing"])
    assert "METRICS_ENABLED" not in without and "METRICS_ENABLED" not in with_
    assert without["OTEL_SDK_DISABLED"] == "true" and with_["OTEL_SDK_DISABLED"] == "false"
    # Production's tracing: one order in ten, no SQLAlchemy spans, sent as OTLP.
    assert with_["OTEL_TRACES_EXPORTER"] == "otlp"
    assert with_["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    assert with_["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] == "sqlalchemy"

    assert saga_cost.COMPARISONS["tracing and metrics"] == (saga_cost.NEITHER, saga_cost.PRODUCTION)


def test_the_work_per_order_is_read_at_the_rate_compared_without_the_servers() -> None:
    at_5, at_10 = step(5), step(10)
    at_10.wall_seconds = 30.0
    at_10.cpu_seconds = {"orders-api": 12.0, "kitchen-saga": 18.0, "broker": 100.0}
    search = saga.SearchRun("saga", [at_5, at_10], idle_cpu={"orders-api": 0.1})

    # 300 orders done; (12 - 0.1 × 30) + 18 = 27 CPU-s: 300 / 27 orders per CPU-second.
    assert saga_cost.orders_per_cpu_second(search, 10) == pytest.approx(300 / 27)
    assert saga_cost.orders_per_cpu_second(search, 20) is None


def test_a_ratio_of_medians_is_decided_only_when_its_interval_lies_on_one_side() -> None:
    # The same runs, told apart by a tenth: the interval is narrow and wholly below.
    low, high = stats.ratio_interval([8.0, 8.1, 7.9, 8.0], [10.0, 10.1, 9.9, 10.0])
    assert 0.78 < low <= 0.8 <= high < 0.83
    assert saga_cost.resolved(low, high) == "yes: missed"
    # Runs that spread 2x on each side: the interval holds the target.
    low, high = stats.ratio_interval([25.0, 50.0, 29.0, 24.0], [29.0, 31.0, 20.0, 50.0])
    assert low < saga_cost.TARGET_RATIO < high
    assert saga_cost.resolved(low, high) == "no"
    assert saga_cost.resolved(0.95, 1.2) == "yes: holds"
    # Seeded: one report reads the same every time.
    assert stats.ratio_interval([1.0, 2.0, 3.0], [2.0, 2.5]) == stats.ratio_interval(
        [1.0, 2.0, 3.0], [2.0, 2.5]
    )


def test_one_search_a_side_decides_nothing() -> None:
    assert saga_cost.interval([20.0], [10.0]) == ("-", "no: one search")
    assert saga_cost.interval([8.0, 8.1], [10.0, 10.1])[1] == "yes: missed"
