"""`make chaos` in small: two short seeded rounds of the saga under load while processes are
`kill -9`ed and restarted and MongoDB restarts; every check of `chaos/checks.py` must pass.

The broker's restart is left out here. It no longer loses acknowledged messages (it is
stopped gracefully: `KafkaBroker.stop`), but it makes every worker rejoin its group, and
a Faust worker's rebalance mid-stream can still skip a message or stall partitions (with
it, these two rounds failed once: an order of seed 102 never reached the kitchen). `make
chaos` restarts it in every round; docs/operations.md ("Chaos rounds") says what fails.
"""

from bench.chaos import cli
from bench.chaos.rounds import RoundSettings
from bench.chaos.system import KINDS, standby_relays


def test_two_chaos_rounds_lose_nothing_and_double_nothing():
    settings = RoundSettings(
        rate=5,
        seconds=8,
        kills=3,
        kinds=(*KINDS, "mongo"),
        relays_per_service=2 if standby_relays() else 1,
        settle_timeout=60,
    )
    results = cli.run(rounds=2, seed=101, settings=settings)
    failures = [
        f"round {r.number} (seed {r.seed}): "
        + (r.error or "; ".join(f"{c.name}: {c.problems[:5]}" for c in r.checks if not c.passed))
        for r in results
        if not r.passed
    ]
    assert not failures, "\n".join(failures)
