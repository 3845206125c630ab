"""One chaos round: a fresh system; one order of each kind as a warm-up; then the load,
while the round's schedule kills and restarts; then, the load stopped, the system left to
settle (polled, with a deadline) and checked.

A process that exits by itself is restarted too (a process runner's restart policy) and
listed in the report. Recovery of each kill is read from the samples the observer takes
twice a second: when the pipeline caught up with what was there when the process came
back (see `recovered_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.chaos import checks, workload
from bench.chaos.observe import Observer, Sample
from bench.chaos.schedule import SERVERS, Action, make_schedule
from bench.chaos.stores import opened_stores
from bench.chaos.system import (
    GROUP_TOPICS,
    KINDS,
    PROJECTIONS_GROUP,
    SERVICES,
    System,
    running_system,
)
from devstack.servers import MongoServer

log = logging.getLogger("chaos")

SAMPLE_INTERVAL = 0.5
SUPERVISE_INTERVAL = 0.3
WARM_UP_TIMEOUT = 120.0
RETRY_FOR = 60.0  # seconds a client keeps sending an unanswered order after the load


@dataclass(frozen=True)
class RoundSettings:
    rate: float = 10.0  # orders per second
    seconds: float = 20.0  # of load
    kills: int = 4  # process kills per round (the servers' restarts come on top)
    kinds: tuple[str, ...] = (*KINDS, *SERVERS)
    relays_per_service: int = 1
    settle_timeout: float = 40.0  # seconds; settling takes a few when all is well


@dataclass
class Happened:
    """An action of the schedule as it was carried out (seconds after the load began)."""

    action: Action
    done_at: float | None = None  # killed, or the server stopped
    back_at: float | None = None  # restarted (a server: answering again)
    recovered_at: float | None = None

    @property
    def recovery(self) -> float | None:
        """Seconds from the kill (the server's stop) to recovery."""
        if self.done_at is None or self.recovered_at is None:
            return None
        return self.recovered_at - self.done_at


@dataclass
class RoundResult:
    number: int
    seed: int
    settings: RoundSettings
    happened: list[Happened] = field(default_factory=list)
    exits: list[tuple[str, float, int | None]] = field(default_factory=list)
    checks: list[checks.Check] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)  # orders per kind
    answers: dict[str, int] = field(default_factory=dict)  # POST /orders answers, all tries
    seconds: dict[str, float] = field(default_factory=dict)  # per phase
    error: str | None = None
    logs: Path | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)


def run_round(
    number: int, seed: int, settings: RoundSettings, mongo: MongoServer, work: Path
) -> RoundResult:
    result = RoundResult(number, seed, settings, logs=work / "logs")
    started = time.monotonic()
    try:
        with running_system(work, mongo, settings.relays_per_service) as system:
            result.seconds["start"] = time.monotonic() - started
            try:
                with opened_stores(SERVICES, system.env) as stores:
                    asyncio.run(_round(system, Observer(stores, system.broker.bootstrap), result))
            finally:
                _drop_database(mongo.url, system.mongo_database)
    except Exception:  # the round fails with its reason; the run goes on
        result.error = traceback.format_exc()
        log.exception("round %d (seed %d) failed", number, seed)
    result.seconds["total"] = time.monotonic() - started
    return result


def _drop_database(url: str, name: str) -> None:
    async def drop() -> None:
        client: AsyncMongoClient[Any] = AsyncMongoClient(url, serverSelectionTimeoutMS=10_000)
        try:
            await client.drop_database(name)
        finally:
            await client.close()

    with contextlib.suppress(Exception):
        asyncio.run(drop())


async def _round(system: System, observer: Observer, result: RoundResult) -> None:
    settings = result.settings
    rng = random.Random(result.seed)
    cast = workload.Cast(run=f"{result.seed}x{rng.getrandbits(24):06x}")
    headers = system.authorization()
    await asyncio.to_thread(cast.set_up, system.urls, headers)
    count = max(int(settings.rate * settings.seconds), 0) + len(workload.KINDS)
    orders = workload.plan_orders(cast, rng, count)
    warm_up, load = orders[: len(workload.KINDS)], orders[len(workload.KINDS) :]
    by_kind = {kind: system.names((kind,)) for kind in KINDS}
    schedule = make_schedule(rng, settings.seconds, by_kind, settings.kinds, settings.kills)
    result.happened = [Happened(action) for action in schedule]

    phase = time.monotonic()
    await warm(system, observer, warm_up, headers)
    result.seconds["warm-up"] = time.monotonic() - phase

    samples: list[Sample] = []
    stopping = asyncio.Event()
    watching = asyncio.create_task(observe(observer, samples, stopping))
    supervising = asyncio.create_task(supervise(system, stopping))
    load_started = time.monotonic()
    try:
        chaos = asyncio.gather(*(carry_out(system, h, load_started) for h in result.happened))
        await workload.offer(
            system.urls["orders"], headers, load, settings.rate, retry_for=RETRY_FOR
        )
        result.seconds["load"] = time.monotonic() - load_started
        await chaos
        phase = time.monotonic()
        final = await settle(samples, settings.settle_timeout)
        result.seconds["settle"] = time.monotonic() - phase
    finally:
        stopping.set()
        await asyncio.gather(watching, supervising)
        await observer.close()
    result.exits = [
        (e.name, e.at - (load_started - system.started_at), e.code) for e in system.exits
    ]
    for happened in result.happened:
        happened.recovered_at = recovered_at(happened, samples, load_started)
    result.kinds = dict(sorted(_count(o.kind for o in orders).items()))
    answers: dict[str, int] = {}
    for order in orders:
        for answer, n in order.answers.items():
            answers[answer] = answers.get(answer, 0) + n
    result.answers = dict(sorted(answers.items()))

    phase = time.monotonic()
    result.checks = await run_checks(system, observer, orders, final)
    result.seconds["checks"] = time.monotonic() - phase


def _count(items: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in items:
        found[item] = found.get(item, 0) + 1
    return found


async def warm(
    system: System, observer: Observer, orders: list[workload.PlacedOrder], headers: dict[str, str]
) -> None:
    """One order of each kind, each to its end in the read model: every worker has its
    partitions before the load begins."""
    await workload.offer(system.urls["orders"], headers, orders, rate=50, retry_for=30)
    ids = [o.order_id for o in orders]
    if None in ids:
        raise RuntimeError(f"warm-up orders not accepted: {[dict(o.answers) for o in orders]}")
    client: AsyncMongoClient[Any] = AsyncMongoClient(system.env["MONGODB_URL"])
    try:
        collection = client[system.mongo_database]["orders"]
        deadline = time.monotonic() + WARM_UP_TIMEOUT
        while True:
            documents = {d["_id"]: d async for d in collection.find({"_id": {"$in": ids}})}
            if all(shows(documents.get(o.order_id), o.expected) for o in orders):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"warm-up orders not ended within {WARM_UP_TIMEOUT:g} s: "
                    f"{[documents.get(i, {}).get('saga') for i in ids]}\n{system.logs()}"
                )
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def shows(document: dict[str, Any] | None, expected: workload.Outcome) -> bool:
    if document is None:
        return False
    saga = document.get("saga") or {}
    return (
        document.get("status"),
        document.get("failed_step"),
        saga.get("ticket"),
        saga.get("card_authorization"),
    ) == (expected.status, expected.failed_step, expected.ticket, expected.authorization)


async def observe(observer: Observer, samples: list[Sample], stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        samples.append(await observer.sample())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SAMPLE_INTERVAL):
                await stopping.wait()


async def supervise(system: System, stopping: asyncio.Event) -> None:
    """Restart what exited by itself, as a process runner would."""
    while not stopping.is_set():
        system.restart_exited()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUPERVISE_INTERVAL):
                await stopping.wait()


async def carry_out(system: System, happened: Happened, load_started: float) -> None:
    action = happened.action
    await asyncio.sleep(max(load_started + action.at - time.monotonic(), 0))

    def since() -> float:
        return time.monotonic() - load_started

    if action.kind in SERVERS:
        server = system.broker if action.target == "broker" else system.mongo
        happened.done_at = since()
        log.info("%.1f s: restarting %s", happened.done_at, action.target)
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        happened.back_at = since()
        return
    log.info("%.1f s: kill -9 %s", since(), action.target)
    system.kill(action.target)
    happened.done_at = since()
    await asyncio.sleep(action.down_for)
    system.restart(action.target)
    happened.back_at = since()
    if system.specs[action.target].health_url is not None:
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(system.healthy, action.target):
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)
        happened.recovered_at = since()


async def settle(samples: list[Sample], timeout: float) -> Sample:
    """Wait (polling the observer's samples) until two samples in a row show every lag at 0
    with the same store heads; the last sample either way."""
    deadline = time.monotonic() + timeout
    while True:
        if len(samples) >= 2:
            previous, last = samples[-2], samples[-1]
            if previous.settled() and last.settled() and previous.heads == last.heads:
                return last
        if time.monotonic() > deadline:
            return samples[-1]
        await asyncio.sleep(SAMPLE_INTERVAL / 2)


def recovered_at(happened: Happened, samples: list[Sample], load_started: float) -> float | None:
    """When the pipeline had caught up with what there was when the process (server) came
    back: an API answers /health (`carry_out`); a relay's position reached its store's
    head; a worker's group committed the end offsets of its partitions; after the
    broker, every relay and group; after MongoDB, the projections' group."""
    action = happened.action
    if happened.recovered_at is not None or happened.back_at is None:
        return happened.recovered_at
    back = load_started + happened.back_at
    after = [s for s in samples if s.at >= back]
    target = next((s for s in after if s.ends is not None), None)
    if target is None:
        return None
    if action.kind == "relay":
        service = action.target.split("-")[0]
        relays, groups = [service], []
    elif action.kind == "saga":
        relays, groups = [], [action.target]
    elif action.kind in ("projections", "mongo"):
        relays, groups = [], [PROJECTIONS_GROUP]
    elif action.kind == "broker":
        relays, groups = list(SERVICES), list(GROUP_TOPICS)
    else:
        return None
    for sample in after:
        if sample.committed is None or sample.ends is None:
            continue
        caught_up = all(sample.positions[s] >= target.heads[s] for s in relays) and all(
            sample.committed.get(group, {}).get(tp, 0) >= end
            for group in groups
            for tp, end in (target.ends or {}).items()
            if tp.topic in GROUP_TOPICS[group]
        )
        if caught_up:
            return sample.at - load_started
    return None


async def run_checks(
    system: System, observer: Observer, orders: list[workload.PlacedOrder], final: Sample
) -> list[checks.Check]:
    stores = observer.stores
    facts = await asyncio.to_thread(checks.Facts.read, stores)
    client: AsyncMongoClient[Any] = AsyncMongoClient(system.env["MONGODB_URL"], tz_aware=False)
    bootstrap = system.broker.bootstrap
    try:
        db = client[system.mongo_database]
        return [
            checks.outcomes(orders, facts),
            checks.nothing_twice(orders, facts),
            checks.accounts(facts),
            await checks.read_models(orders, facts, db),
            await checks.rebuilds(stores, db, bootstrap),
            await checks.published(stores, bootstrap),
            await checks.dead_letters(bootstrap),
            await checks.lags(final, db, bootstrap),
        ]
    finally:
        await client.close()
