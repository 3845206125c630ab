"""The saga_pairs benchmark reads each window's two sides as it says. Speed is never
asserted here."""

import math

import pytest

from bench import stats
from bench.scenarios import saga_cost, saga_pairs
from tests.reference_saga.unit.test_bench_capacity import step


def _window(
    without_cpu: float, with_cpu: float, idle: float = 0.1, round_number: int = 0, number: int = 1
) -> saga_pairs.Window:
    without, with_ = step(10), step(10)  # 300 orders done each
    for measured, used in ((without, without_cpu), (with_, with_cpu)):
        measured.wall_seconds = 30.0
        measured.cpu_seconds = {"orders-api": used, "kitchen-saga": 10.0, "broker": 50.0}
    without_idle: dict[str, float] = {"orders-api": idle}
    return saga_pairs.Window(round_number, number, without, with_, without_idle, {})


def test_the_work_per_order_is_the_systems_own_in_all_or_above_idle() -> None:
    window = _window(without_cpu=5.0, with_cpu=5.0, idle=0.1)
    without, with_ = window.work(above_idle=False)
    # 300 orders; 5 + 10 CPU-s of the system's processes (the broker is not the system's).
    assert without == with_ == pytest.approx(300 / 15)
    without, with_ = window.work(above_idle=True)
    # The without side idled at 0.1 core in the orders API: 3 of its 30 s are idle work.
    assert without == pytest.approx(300 / 12) and with_ == pytest.approx(300 / 15)
    assert window.ratio(above_idle=True) == pytest.approx(12 / 15)


def test_a_side_that_costs_more_cpu_per_order_has_a_ratio_under_one() -> None:
    window = _window(without_cpu=5.0, with_cpu=8.0, idle=0.0)
    assert window.ratio(above_idle=False) == pytest.approx(15 / 18)


def test_a_window_with_no_order_done_has_no_ratio() -> None:
    empty = step(10, seconds=0)
    empty.cpu_seconds = {"orders-api": 1.0}
    assert math.isnan(saga_pairs.orders_per_cpu_second(empty, {}, above_idle=False))


def test_a_median_of_paired_ratios_is_decided_only_when_its_interval_lies_on_one_side() -> None:
    low, high = stats.median_interval([0.95, 0.96, 0.97, 0.95, 0.96, 0.94])
    assert 0.94 <= low <= high <= 0.97
    assert saga_cost.resolved(low, high) == "yes: holds"
    assert saga_pairs.interval([0.7, 1.2, 0.8, 1.1, 0.75, 1.15])[1] == "no"
    assert saga_pairs.interval([0.95]) == ("-", "no: one balanced ratio")
    assert stats.median_interval([1.0, 2.0, 3.0]) == stats.median_interval([1.0, 2.0, 3.0])


def test_a_bias_for_the_side_started_second_cancels_between_two_rounds() -> None:
    # The with side costs 5 % more CPU per order; the side started second looks 8 % cheaper.
    # Round 1 starts the side without first, round 2 the side with.
    found = [
        _window(without_cpu=5.0, with_cpu=5.0 * 1.05 / 1.08, idle=0.0, round_number=0),
        _window(without_cpu=5.0 / 1.08, with_cpu=5.0 * 1.05, idle=0.0, round_number=1),
        _window(without_cpu=5.0, with_cpu=5.0 * 1.05 / 1.08, idle=0.0, round_number=0, number=2),
    ]
    raw = [w.ratio(above_idle=False) for w in found]
    assert raw[0] - raw[1] > 0.04  # each round alone reads the bias, one way or the other
    # Window 2 of round 1 has no partner in round 2: it is left out.
    (joined,) = saga_pairs.balanced(found, above_idle=False)
    assert joined == pytest.approx(math.sqrt(raw[0] * raw[1]))
    # Without the bias: 300 orders on 5 + 10 CPU-s beside 5.25 + 10.
    assert joined == pytest.approx(15 / 15.25, abs=0.003)
    first, second = saga_pairs.by_start(found, above_idle=False)
    assert first == pytest.approx(raw[0]) and second == pytest.approx(raw[1])
