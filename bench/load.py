"""Load generators: open loop at a fixed offered rate, and closed loop with N clients.

Both are bounded (a number of requests or a duration) and measure latency the honest
way: the open loop times each request from when it was *due*, so a slow system that
falls behind shows its queueing instead of hiding it (coordinated omission).
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("bench")

failures: Counter[str] = Counter()
"""Every failed request of this process by its reason (the first few of each are logged)."""
LOGGED_PER_REASON = 3


def failed(reason: str) -> None:
    """Count a failed request; log the first few of each reason, so a run's log says why
    requests failed without repeating it thousands of times at an overloaded step."""
    failures[reason] += 1
    if failures[reason] <= LOGGED_PER_REASON:
        log.warning("request failed (%d so far for this reason): %s", failures[reason], reason)


@dataclass
class LoadRun:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    done_at: list[float] = field(default_factory=list)  # seconds since start, each success
    errors: int = 0
    duration: float = 0.0  # seconds from the first request to the last answer

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return len(self.latencies) / self.duration if self.duration else 0.0

    def progress(self) -> list[tuple[float, int]]:
        """(seconds since start, requests done) for the throughput chart."""
        return [(t, i + 1) for i, t in enumerate(sorted(self.done_at))]

    async def attempt(
        self, request: Callable[[int], Awaitable[bool]], i: int, since: float, start: float
    ) -> None:
        """Send request `i` and count it: its latency from `since` and when it was done
        (seconds after `start`) if it succeeded, else an error."""
        try:
            ok = await request(i)
        except Exception as error:  # noqa: BLE001 - counted; the load goes on
            failed(f"{type(error).__name__}: {error}"[:200])
            ok = False
        now = time.perf_counter()
        if ok:
            self.latencies.append(now - since)
            self.done_at.append(now - start)
        else:
            self.errors += 1


async def open_loop(
    rate: float,
    count: int,
    request: Callable[[int], Awaitable[bool]],
    max_in_flight: int = 1000,
) -> LoadRun:
    """Start request `i` at `i / rate` seconds, whatever the answers; `request` returns
    whether it succeeded. Latency counts from the due time."""
    run = LoadRun()
    start = time.perf_counter()
    limit = asyncio.Semaphore(max_in_flight)

    async def one(i: int, due: float) -> None:
        async with limit:
            await run.attempt(request, i, due, start)

    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    run.duration = time.perf_counter() - start
    return run


async def closed_loop(
    clients: int, seconds: float, request: Callable[[int], Awaitable[bool]]
) -> LoadRun:
    """`clients` loops each sending its next request when the last one answered."""
    run = LoadRun()
    start = time.perf_counter()
    deadline = start + seconds
    counter = iter(range(10**9))

    async def client() -> None:
        while (sent := time.perf_counter()) < deadline:
            await run.attempt(request, next(counter), sent, start)

    await asyncio.gather(*(client() for _ in range(clients)))
    run.duration = time.perf_counter() - start
    return run
