"""The tracing benchmark's rounds: no variant always runs first on the machine."""

from bench.scenarios.tracing import VARIANTS, turns


def test_each_round_starts_with_the_next_variant_and_runs_every_variant_once() -> None:
    variants = list(VARIANTS)

    rounds = [turns(variants, number) for number in range(len(variants) + 1)]

    assert [order[0] for order in rounds] == [*variants, variants[0]]
    assert all(sorted(order) == sorted(variants) for order in rounds)
    assert rounds[1] == [*variants[1:], variants[0]]
