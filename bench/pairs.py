"""Two fresh orders API processes side by side, one set-up each, driven at the same
moment: what a benchmark compares when the difference it looks for (a few per cent) is
smaller than how much this machine's speed moves from one run to the next (10-20 %).
Used by the tracing and metrics_cost scenarios."""

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

from bench import http as bench_http
from bench import stack
from bench.load import LoadRun, closed_loop
from bench.scenarios import write_path
from devstack import processes
from devstack.servers import free_port


@dataclasses.dataclass(frozen=True)
class ApiRun:
    """One measured side of a round: the orders API's throughput, and its process's CPU
    time per command (from /proc: what the set-up adds, whatever else shares the machine)."""

    run: write_path.Run
    cpu_ms_per_command: float


@dataclasses.dataclass(frozen=True)
class Pair:
    """A round: off and on, measured side by side at the same moment."""

    off: ApiRun
    on: ApiRun

    @property
    def throughput_ratio(self) -> float:
        return self.on.run.per_second / self.off.run.per_second

    @property
    def cpu_ratio(self) -> float:
        """CPU per command off ÷ on: the share of the work left when the feature is on."""
        return self.off.cpu_ms_per_command / self.on.cpu_ms_per_command


def api_pair(
    off_env: dict[str, str], on_env: dict[str, str], work: Path, clients: int, seconds: float
) -> Pair:
    """Two fresh orders API processes, a feature off and on (their environments), each
    driven by ``clients`` closed-loop clients at the same time: a warm-up third, then
    ``seconds`` measured, each process's CPU time read from /proc around the measured
    part.

    Side by side rather than one after the other: this machine's speed moves by 10-20 %
    from one run to the next (runs of the same set-up, one after the other, used 1.6 to
    2.6 ms of CPU per command), and both sides of a pair see the same moment."""
    ports = free_port(), free_port()
    with stack.System(on_env, work) as system:
        sides = [
            system.start(
                processes.api(
                    f"orders-api-{side}", "write_side.orders.api:create_app", port, env, work
                )
            )
            for side, port, env in zip(("off", "on"), ports, (off_env, on_env), strict=True)
        ]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        system.wait_healthy(*urls, timeout=60)

        async def load(url: str, duration: float) -> LoadRun:
            async with bench_http.client(url, connections=clients) as http:

                async def place(i: int) -> bool:
                    answer = await bench_http.post_json(
                        http, "/orders", write_path.ORDER, expect=201
                    )
                    return answer is not None

                return await closed_loop(clients, duration, place)

        async def measured() -> tuple[list[LoadRun], list[float]]:
            await asyncio.gather(*(load(url, seconds / 3) for url in urls))
            before = [process.cpu_seconds() or 0.0 for process in sides]
            runs = await asyncio.gather(*(load(url, seconds) for url in urls))
            used = [(p.cpu_seconds() or 0.0) - b for p, b in zip(sides, before, strict=True)]
            return list(runs), used

        loads, used = asyncio.run(measured())
    measured_sides = []
    for side, load_run, cpu in zip(("off", "on"), loads, used, strict=True):
        if load_run.errors:
            raise RuntimeError(
                f"POST /orders failed {load_run.errors} times; see {work}/orders-api-{side}.log"
            )
        commands = len(load_run.latencies)
        measured_sides.append(
            ApiRun(
                write_path.Run(commands, load_run.duration, load_run.latencies),
                cpu / max(commands, 1) * 1000,
            )
        )
    return Pair(*measured_sides)


def median_pair(pairs: list[Pair], ratio: Callable[[Pair], float]) -> Pair:
    """The pair whose ``ratio`` is the median (the upper one of an even count)."""
    return sorted(pairs, key=ratio)[len(pairs) // 2]
