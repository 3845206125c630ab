"""The saga_cost benchmark compares what it says it compares. Speed is never asserted here."""

import pytest

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
