"""``StallWatch``: a partition behind the broker's end that does not move while the worker
is idle is stalled; a busy worker, a moving partition or an absent broker is not."""

from kernel.health import StallWatch

P = ("orders", 0)
Q = ("orders", 1)


def test_a_partition_behind_that_does_not_move_for_the_idle_time_is_stalled():
    watch = StallWatch(stall_after=10)
    assert watch.observe({P: (5, 8), Q: (3, 3)}, busy_seconds=0, now=100) == {}
    assert watch.observe({P: (5, 8), Q: (3, 3)}, busy_seconds=0, now=109) == {}
    assert watch.observe({P: (5, 8), Q: (3, 3)}, busy_seconds=0, now=110) == {P: (3, 10.0)}


def test_time_spent_on_batches_does_not_count():
    """A batch retried while a server is away: the worker waits, it is not stalled."""
    watch = StallWatch(stall_after=10)
    watch.observe({P: (5, 8)}, busy_seconds=0, now=100)
    assert watch.observe({P: (5, 8)}, busy_seconds=30, now=130) == {}
    assert watch.observe({P: (5, 8)}, busy_seconds=30, now=139) == {}
    assert watch.observe({P: (5, 8)}, busy_seconds=30, now=141) == {P: (3, 11.0)}


def test_a_partition_that_moves_or_catches_up_starts_again():
    watch = StallWatch(stall_after=10)
    watch.observe({P: (5, 8)}, busy_seconds=0, now=100)
    assert watch.observe({P: (6, 9)}, busy_seconds=0, now=115) == {}  # it moved
    assert watch.observe({P: (6, 9)}, busy_seconds=0, now=124) == {}
    assert watch.observe({P: (9, 9)}, busy_seconds=0, now=140) == {}  # caught up
    assert watch.observe({P: (9, 12)}, busy_seconds=0, now=149) == {}
    assert watch.observe({P: (9, 12)}, busy_seconds=0, now=159) == {P: (3, 10.0)}


def test_a_partition_given_to_another_worker_is_forgotten():
    watch = StallWatch(stall_after=10)
    watch.observe({P: (5, 8)}, busy_seconds=0, now=100)
    assert watch.observe({}, busy_seconds=0, now=105) == {}
    assert watch.observe({P: (5, 8)}, busy_seconds=0, now=112) == {}  # back: from 0
    assert watch.observe({P: (5, 8)}, busy_seconds=0, now=122) == {P: (3, 10.0)}


def test_the_time_the_broker_did_not_answer_does_not_count():
    watch = StallWatch(stall_after=10)
    watch.observe({P: (5, 8)}, busy_seconds=0, now=100)
    watch.pause()
    assert watch.observe({P: (5, 8)}, busy_seconds=0, now=160) == {}
    assert watch.observe({P: (5, 8)}, busy_seconds=0, now=169) == {}
    assert watch.observe({P: (5, 8)}, busy_seconds=0, now=170) == {P: (3, 10.0)}
