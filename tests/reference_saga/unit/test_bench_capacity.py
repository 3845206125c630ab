"""The saga benchmark's pure helpers: the capacity search's verdicts and knee, the order
mix, and the split of an order's time into hops. Speed is never asserted here."""

import os
import socket
from collections import Counter

import pytest

from bench import capacity, hops
from bench.capacity import OrderMix, Step


def step(
    offered: float,
    latency: float = 0.1,
    *,
    seconds: float = 30,
    capacity_per_s: float | None = None,
    errors: int = 0,
    pending: int = 0,
) -> Step:
    """Orders due every 1/offered s, each done `latency` later, or no faster than
    `capacity_per_s` (a backlog: latency grows)."""
    count = int(offered * seconds)
    done_at, latencies, free_at = [], [], 0.0
    for i in range(count):
        due = i / offered
        finished = due + latency
        if capacity_per_s is not None:
            finished = max(finished, free_at + 1 / capacity_per_s)
            free_at = finished
        done_at.append(finished)
        latencies.append(finished - due)
    return Step(
        offered=offered,
        seconds=seconds,
        latencies=latencies,
        done_at=done_at,
        accepted=count,
        errors=errors,
        pending=pending,
        accept_latencies=[0.01] * count,
    )


def test_completion_rate_is_the_offered_rate_when_kept_up_and_the_capacity_when_not():
    assert capacity.completion_rate(step(20, 0.2).done_at, 30) == pytest.approx(20, rel=0.05)
    behind = step(20, 0.2, capacity_per_s=6)
    assert capacity.completion_rate(behind.done_at, 30) == pytest.approx(6, rel=0.05)
    assert capacity.completion_rate([], 30) == 0.0
    assert capacity.completion_rate([1.0], 0) == 0.0


def test_a_step_passes_only_when_every_order_is_done_in_time_and_completions_keep_up():
    assert capacity.shortfalls(step(20, 0.2)) == []
    assert any("p99" in r for r in capacity.shortfalls(step(20, 1.5)))
    assert any("not done" in r for r in capacity.shortfalls(step(20, 0.2, pending=1)))
    assert any("not accepted" in r for r in capacity.shortfalls(step(20, 0.2, errors=2)))
    # p99 under the limit but too few done in the steady state: behind.
    slow = step(20, 0.2, capacity_per_s=21)
    slow.done_at = [t * 2 for t in slow.done_at]
    assert any("done <" in r for r in capacity.shortfalls(slow))
    empty = step(20)
    empty.latencies, empty.done_at = [], []
    assert "none done" in capacity.shortfalls(empty)


def test_the_knee_is_the_last_rate_passed_before_the_first_failure():
    assert capacity.knee([step(5), step(10), step(20, 3.0)]) == 10
    assert capacity.knee([step(5, 3.0)]) is None
    assert capacity.knee([step(5), step(10, 3.0), step(20)]) == 5
    assert capacity.knee([]) is None


def test_after_refining_the_knee_is_the_highest_rate_passed_below_the_lowest_failed():
    refined = [step(5), step(10), step(20, 3.0), step(15), step(17.5, 3.0), step(16.25)]
    assert capacity.knee(refined) == 16.25
    assert capacity.capacity_text(refined) == "16.25 orders/s"
    assert not capacity.every_rate_passed(refined)
    assert capacity.every_rate_passed([step(5), step(10)])
    assert not capacity.every_rate_passed([])


def test_capacity_text_and_ratio_say_when_a_knee_is_only_a_bound():
    found, all_passed = [step(5), step(10, 2.0)], [step(5), step(10), step(20)]
    failed_first = [step(5, 2.0)]
    assert capacity.capacity_text(found) == "5 orders/s"
    assert capacity.capacity_text(all_passed).startswith("≥ 20")
    assert capacity.capacity_text(failed_first) == "< 5 orders/s"
    bare = [step(5), step(10), step(20), step(50, 2.0)]
    assert capacity.capacity_ratio(found, bare) == (pytest.approx(0.25), "")
    assert capacity.capacity_ratio(found, all_passed) == (pytest.approx(0.25), "≤")
    assert capacity.capacity_ratio(all_passed, bare) == (pytest.approx(1.0), "≥")
    assert capacity.capacity_ratio(failed_first, bare) == (pytest.approx(0.25), "<")
    assert capacity.capacity_ratio(all_passed, all_passed) == (None, "")
    assert capacity.capacity_ratio(found, failed_first) == (None, "")


def test_a_bounded_ratio_meets_a_target_only_when_the_bound_says_so():
    assert capacity.at_least(0.6, "", 0.5) is True
    assert capacity.at_least(0.4, "", 0.5) is False
    assert capacity.at_least(0.6, "≥", 0.5) is True
    assert capacity.at_least(0.4, "≥", 0.5) is None
    assert capacity.at_least(0.4, "≤", 0.5) is False
    assert capacity.at_least(0.6, "<", 0.5) is None


async def test_the_search_stops_after_the_first_failing_rate():
    measured = []

    async def measure(rate: float) -> Step:
        measured.append(rate)
        return step(rate, 0.2 if rate < 20 else 2.0)

    steps = await capacity.search([5, 10, 20, 50, 100], measure)
    assert measured == [5, 10, 20]
    assert [s.offered for s in steps] == [5, 10, 20]
    assert capacity.knee(steps) == 10


async def test_a_refined_search_bisects_between_the_knee_and_the_failure_settling_first():
    measured, settled = [], []

    async def measure(rate: float) -> Step:
        measured.append(rate)
        return step(rate, 0.2 if rate <= 17 else 2.0)

    async def settle() -> None:
        settled.append(len(measured))

    steps = await capacity.search([5, 10, 20, 50], measure, refine=0.1, settle=settle)

    # 10 passed, 20 failed: 15 passes, 17.5 fails, 16.25 passes (within 10 % of 16.25).
    assert measured == [5, 10, 20, 15, 17.5, 16.25]
    assert settled == [3, 4, 5]
    assert capacity.knee(steps) == 16.25


async def test_a_refined_search_adds_nothing_when_every_rate_passed_or_the_first_failed():
    async def passes(rate: float) -> Step:
        return step(rate)

    async def fails(rate: float) -> Step:
        return step(rate, 2.0)

    assert len(await capacity.search([5, 10], passes, refine=0.1)) == 2
    assert len(await capacity.search([5, 10], fails, refine=0.1)) == 1


def test_the_order_mix_gives_the_hot_consumers_their_share_and_uses_everyone():
    consumers = [f"c{i}" for i in range(50)]
    mix = OrderMix(consumers, ["r1", "r2", "r3"], hot=3, hot_share=0.5, seed=1)
    picks = [mix.next() for _ in range(20_000)]
    by_consumer = Counter(c for c, _ in picks)
    hot = sum(by_consumer[c] for c in consumers[:3]) / len(picks)
    assert hot == pytest.approx(0.5, abs=0.02)
    assert set(by_consumer) == set(consumers)
    assert {r for _, r in picks} == {"r1", "r2", "r3"}
    again = OrderMix(consumers, ["r1", "r2", "r3"], hot=3, hot_share=0.5, seed=1)
    assert [again.next() for _ in range(100)] == picks[:100]
    with pytest.raises(ValueError):
        OrderMix(consumers, ["r1"], hot=0)


def approved_order(start: float) -> hops.EventTimes:
    """Each event made 10 ms after the last was published, published 5 ms later."""
    names = [hop.made for hop in hops.APPROVED_PATH if hop.made]
    events, clock = {}, start
    for name in names:
        made = clock + 0.010
        events[name] = (made, made + 0.005)
        clock = made + 0.005
    return events


def test_hop_times_add_up_to_the_order_s_whole_path_and_skip_incomplete_orders():
    events = {"a": approved_order(100.0), "b": approved_order(200.0)}
    del events["b"]["kitchen.TicketCreated"]  # never tapped: left out
    seen = {"a": 100.0 + 5 * 0.015 + 0.020, "b": 300.0, "c": 400.0}
    times = hops.hop_times(events, seen)
    first, *middle, last = hops.APPROVED_PATH
    assert times[first.name].total == pytest.approx([0.005])
    assert times[first.name].in_worker == []
    for hop in middle:
        assert times[hop.name].total == pytest.approx([0.015])
        assert times[hop.name].in_worker == pytest.approx([0.010])
        assert times[hop.name].to_published == pytest.approx([0.005])
    assert times[last.name].total == pytest.approx([0.020])
    whole = sum(times[hop.name].total[0] for hop in hops.APPROVED_PATH)
    made_first = events["a"]["orders.OrderCreated"][0]
    assert whole == pytest.approx(seen["a"] - made_first)


def test_the_tap_keeps_the_first_copy_of_an_event_and_ignores_other_messages():
    tap = hops.Tap("127.0.0.1:1", ["orders"], 4)
    envelope = (
        b'{"type": "orders.OrderCreated.v2", "time": "2026-12-03T14:00:00.250000Z",'
        b' "data": {"order_id": "o1"}}'
    )
    tap.record(envelope, 1_796_306_400_300)
    tap.record(envelope.replace(b"250000", b"900000"), 1_796_306_401_000)  # re-published
    tap.record(b'{"type": "consumers.ConsumerRegistered.v1", "data": {}}', 1)
    tap.record(b"not json", 1)
    assert list(tap.events) == ["o1"]
    made, published = tap.events["o1"]["orders.OrderCreated"]
    assert published - made == pytest.approx(0.050)
    assert len(tap.partitions) == 4


def test_messages_per_process_count_the_topics_each_reads_or_writes():
    handled = hops.messages_per_process({"orders": 2, "kitchen": 3, "elsewhere": 7})
    assert handled["orders-saga"] == 3  # reads consumers, kitchen, accounting
    assert handled["consumers-saga"] == 2
    assert handled["projections"] == 5
    assert handled["orders-relay"] == 2 and handled["accounting-relay"] == 0


def test_the_process_listening_on_a_port_is_found_and_its_cpu_read():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert hops.listening_pid(port) == os.getpid()
    assert hops.listening_pid(port) is None
    me = {"me": os.getpid(), "gone": 2**22 + 1}
    assert set(hops.cpu_seconds(me)) == {"me"} and hops.cpu_seconds(me)["me"] > 0
    assert hops.between({"a": 1.0}, {"a": 3.5, "b": 1.0}) == {"a": 2.5}
