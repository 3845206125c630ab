"""A round's kill schedule, from its seed alone: which process is `kill -9`ed when and how
long it stays down, and when the broker and the MongoDB-compatible server restart.

The same seed and settings give the same schedule, so a failed round can be run again
(`make chaos CHAOS_ARGS='--seed S --rounds 1'`). Times are seconds after the load starts;
everything happens within the load's first `ACTIVE_SHARE`, so the load goes on for a
while after the last restart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SERVERS = ("broker", "mongo")
ACTIVE_SHARE = 0.75
DOWN_SECONDS = (0.5, 2.0)  # how long a killed process stays down before its restart


@dataclass(frozen=True)
class Action:
    at: float
    target: str  # a process's name, or "broker" / "mongo"
    kind: str  # api, relay, saga, projections, broker or mongo
    down_for: float = 0.0  # seconds between the kill and the restart (processes)

    @property
    def restart_at(self) -> float:
        return self.at + self.down_for

    def describe(self) -> str:
        if self.kind in SERVERS:
            return f"restart {self.target}"
        return f"kill -9 {self.target}, restarted {self.down_for:.1f} s later"


def make_schedule(
    rng: random.Random,
    seconds: float,
    processes_by_kind: dict[str, list[str]],
    kinds: tuple[str, ...],
    kills: int,
) -> list[Action]:
    """`kills` process kills of the `kinds` chosen (a kind first, then one of its
    processes not down at that moment), and a restart of each server in `kinds`: the
    broker in the first half of the active part, MongoDB in the second."""
    active = seconds * ACTIVE_SHARE
    actions = []
    for server, (start, end) in zip(SERVERS, ((0.1, 0.5), (0.5, 0.9)), strict=True):
        if server in kinds:
            actions.append(Action(round(rng.uniform(start, end) * active, 2), server, server))
    process_kinds = [k for k in kinds if k not in SERVERS and processes_by_kind.get(k)]
    if process_kinds:
        times = sorted(round(rng.uniform(0.05, 1.0) * active, 2) for _ in range(kills))
        down_until: dict[str, float] = {}
        for at in times:
            kind = rng.choice(process_kinds)
            up = [n for n in processes_by_kind[kind] if down_until.get(n, -1.0) < at]
            if not up:
                continue
            target = rng.choice(up)
            down_for = round(rng.uniform(*DOWN_SECONDS), 2)
            down_until[target] = at + down_for
            actions.append(Action(at, target, kind, down_for))
    return sorted(actions, key=lambda action: action.at)
