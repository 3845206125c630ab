"""Write path: commands/s and latency, with group commit, beside raw baselines.

On SQLite and on PostgreSQL (a fresh schema in the ``test`` database), at the same
offered concurrency (``CLIENTS`` callers, each sending its next command when the last
one is answered):

(a) ``POST /orders`` through the orders command API (a uvicorn process), and the same
    request to a trivial FastAPI endpoint that validates the body and stores nothing:
    the ceiling of the HTTP layer on this machine;
(b) ``OrdersApplication.place_order`` called directly: group commit;
(c) baseline: a plain eventsourcing Application saving one ``Order`` per command (one
    transaction each, the library's recorder);
(d) baseline: a raw ``INSERT`` + ``COMMIT`` loop on one connection (SQLAlchemy Core).

(b) and (c) also run with every thread of the process on one core (the other is left
to PostgreSQL and the rest of the machine), as ``taskset -c 0`` would run a service:
a process bound by the GIL loses time to its threads waking each other across cores.

The issue's target compares (b) with (c): at least 10x on PostgreSQL, p99 < 50 ms.
A profile of (b) goes in the notes. ``python -m bench.scenarios.write_path [--quick]``
runs it alone (PostgreSQL must be running; it starts nothing but uvicorn).
"""

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy
from eventsourcing.application import Application
from fastapi import FastAPI
from pyinstrument import Profiler
from sqlalchemy.engine import make_url

from bench import http as bench_http
from bench import stack
from bench.examples import ADDRESS
from bench.load import LoadRun, closed_loop
from bench.scenario import BenchContext, Measurement, ScenarioResult
from devstack import processes
from devstack.servers import free_port
from kernel.application import open_application
from kernel.group_commit import _Staged
from kernel.store import event_store_env
from write_side.orders.api import PlaceOrder
from write_side.orders.application import OrdersApplication
from write_side.orders.domain import Order

CLIENTS = 64
ORDER: dict[str, Any] = {
    "customer_id": "bench-customer",
    "restaurant_id": "bench-restaurant",
    "delivery_address": ADDRESS,
    "line_items": [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}],
}
TARGET_RATIO = 10.0
TARGET_P99_MS = 50.0


class Run:
    """Throughput and latencies of one measured workload."""

    def __init__(self, count: int, seconds: float, latencies: list[float]):
        self.per_second = count / seconds
        ordered = sorted(latencies)
        self.p50, self.p95, self.p99 = (_percentile(ordered, q) * 1000 for q in (0.50, 0.95, 0.99))


def _median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda run: run.per_second)[len(runs) // 2]


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def drive(call: Callable[[], Any], clients: int, seconds: float, max_calls: int) -> Run:
    """``clients`` threads call ``call`` back to back for ``seconds`` (or ``max_calls``)."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = 0.0

    def client() -> None:
        mine: list[float] = []
        start.wait()
        while time.perf_counter() < deadline and len(mine) * clients < max_calls:
            began = time.perf_counter()
            call()
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    return Run(len(latencies), time.perf_counter() - began, latencies)


@contextmanager
def on_one_core() -> Iterator[None]:
    """Every thread of this process on one CPU meanwhile (the threads it starts
    inherit it); nothing changes where the OS cannot pin threads."""
    if not hasattr(os, "sched_setaffinity") or not Path("/proc/self/task").is_dir():
        yield
        return
    before = os.sched_getaffinity(0)
    _pin_threads({min(before)})
    try:
        yield
    finally:
        _pin_threads(before)


def _pin_threads(cpus: set[int]) -> None:
    for task in os.listdir("/proc/self/task"):
        with suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task), cpus)


# The stores


@contextmanager
def stores(context: BenchContext) -> Iterator[list[tuple[str, str, str | None]]]:
    """(name, URL, schema) of a fresh SQLite file and a fresh PostgreSQL schema."""
    schema = f"bench_write_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(context.postgres_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        sqlite = f"sqlite:///{context.work_dir}/write_path_{uuid.uuid4().hex[:8]}_{{}}.db"
        yield [("SQLite", sqlite, None), ("PostgreSQL", context.postgres_url, schema)]
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def _url(template: str, part: str) -> str:
    return template.format(part) if "{}" in template else template


# (a) HTTP


def trivial_app() -> FastAPI:
    """The ceiling: the same request validated by FastAPI, nothing stored."""
    api = FastAPI()

    @api.post("/orders", status_code=201)
    def place_order(body: PlaceOrder) -> dict[str, str]:
        return {"order_id": str(uuid.uuid4())}

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return api


@contextmanager
def uvicorn(factory: str, env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A uvicorn process serving ``factory`` on a free port; its URL. Stopped by its PID."""
    port = free_port()
    name = factory.split(":")[0]  # its log: <work dir>/<module>.log
    with stack.System(env, log_dir) as system:
        system.start(processes.api(name, factory, port, env, log_dir))
        url = f"http://127.0.0.1:{port}"
        system.wait_healthy(url, timeout=60)
        yield url


def drive_http(url: str, clients: int, seconds: float) -> Run:
    """``clients`` connections each POSTing its next order when the last one answered
    (aiohttp, `bench.http`): a warm-up, then the measured run."""

    async def measured() -> LoadRun:
        async with bench_http.client(url, connections=clients) as http:

            async def place(i: int) -> bool:
                return await bench_http.post_json(http, "/orders", ORDER, expect=201) is not None

            await closed_loop(clients, seconds / 3, place)
            return await closed_loop(clients, seconds, place)

    run = asyncio.run(measured())
    if run.errors:
        raise RuntimeError(
            f"POST /orders failed {run.errors} times; see the API process log in the work directory"
        )
    return Run(len(run.latencies), run.duration, run.latencies)


# (c) the library baseline


class LibraryOrders(Application[uuid.UUID]):
    """The eventsourcing library as it comes: one save, one transaction per command."""

    name = "library_orders"

    def place_order(self, **order: Any) -> None:
        self.save(Order(**order))


def library_application(url: str, schema: str | None) -> LibraryOrders:
    env = {"PERSISTENCE_MODULE": "eventsourcing_sqlalchemy", "SQLALCHEMY_URL": url}
    if schema:
        env["SQLALCHEMY_SCHEMA"] = schema
    return LibraryOrders(env=env)


# (d) the raw driver baseline


def raw_insert_commit_loop(url: str, schema: str | None, seconds: float, max_calls: int) -> Run:
    """One row per transaction, one connection, no framework."""
    engine = sqlalchemy.create_engine(make_url(event_store_env(url)["SQLALCHEMY_URL"]))
    table = f"{schema}.raw_events" if schema else "raw_events"
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                f"CREATE TABLE IF NOT EXISTS {table} ("
                + (
                    "id BIGSERIAL PRIMARY KEY"
                    if postgres
                    else "id INTEGER PRIMARY KEY AUTOINCREMENT"
                )
                + ", originator_id VARCHAR(36), originator_version INTEGER, topic TEXT, state "
                + ("BYTEA" if postgres else "BLOB")
                + ")"
            )
        )
    insert = sqlalchemy.text(
        f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
        "VALUES (:originator_id, 1, 'Order.Placed', :state)"
    )
    state = b'{"customer_id": "bench-customer"}'
    latencies: list[float] = []
    try:
        with engine.connect() as connection:
            began = time.perf_counter()
            deadline = began + seconds
            while time.perf_counter() < deadline and len(latencies) < max_calls:
                started = time.perf_counter()
                connection.execute(insert, {"originator_id": str(uuid.uuid4()), "state": state})
                connection.commit()
                latencies.append(time.perf_counter() - started)
            elapsed = time.perf_counter() - began
    finally:
        engine.dispose()
    return Run(len(latencies), elapsed, latencies)


# The profile


def profile_notes(app: OrdersApplication, clients: int, seconds: float) -> list[str]:
    """Where a group-committed command's time goes (pyinstrument, wall time).

    Seen from one of ``clients`` callers, then from the committer's side: one batch's
    insert as the committer does it.
    """
    own_work = command_work(app)
    stop = threading.Event()

    def others() -> None:
        while not stop.is_set():
            app.place_order(**ORDER)

    threads = [threading.Thread(target=others) for _ in range(clients - 1)]
    for thread in threads:
        thread.start()
    caller = Profiler(interval=0.0005)
    caller.start()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        app.place_order(**ORDER)
    caller.stop()
    # Without the profiler: the process's CPU time and its threads' sleeps per command.
    cpu, switches, commands = process_costs(app, seconds / 2)
    stop.set()
    for thread in threads:
        thread.join()
    turn = _frames_time(caller, "lock.acquire", parent="run")
    commit = _frames_time(caller, "wait_until_settled")
    total = _frames_time(caller, "in_turn")  # the whole call of the @command method
    own = max(total - turn - commit, 0.0)
    notes = [
        f"profile, one caller among {clients}: {turn / total:.0%} waiting for its turn, "
        + f"{commit / total:.0%} waiting for its batch's commit, "
        + f"{own / total:.0%} its own work (Order, encoding)",
        f"cost per command at {clients} callers: {cpu / commands * 1e6:.0f} µs of the "
        + f"process's CPU time (user + system), {switches / commands:.1f} voluntary "
        + "context switches (a thread sleeping on a lock or waiting for the GIL); the "
        + "command's own work (Order, collecting and encoding its event), timed alone, "
        + f"is {own_work * 1e6:.0f} µs: most of the rest is threads handing over",
    ]

    batches = 20
    events = [
        [
            app.mapper.to_stored_event(e)
            for _ in range(clients)
            for e in Order(**ORDER).collect_events()
        ]
        for _ in range(batches)
    ]
    committer = Profiler(interval=0.0002)
    committer.start()
    for batch in events:
        app.recorder.insert_events(batch)
    committer.stop()
    insert = _frames_time(committer, "insert_events")
    parts = {
        "table lock": _frames_time(committer, "_lock_table"),
        "INSERT from arrays": _frames_time(
            committer, "exec_driver_sql", parent="_insert_postgresql"
        ),
        "NOTIFY": _frames_time(committer, "_notify_channel"),
        "COMMIT": _frames_time(committer, "commit", parent="__exit__"),
    }
    notes.append(
        f"profile, the committer's insert of a batch of {clients} events "
        + f"({insert / batches * 1000:.1f} ms): "
        + ", ".join(f"{name} {part / insert:.0%}" for name, part in parts.items())
    )
    return notes


def command_work(app: OrdersApplication, count: int = 2000) -> float:
    """Seconds of a place_order's own work, in one thread: the Order and its encoding."""
    began = time.perf_counter()
    for _ in range(count):
        _Staged([Order(**ORDER)], app.mapper)
    return (time.perf_counter() - began) / count


def process_costs(app: OrdersApplication, seconds: float) -> tuple[float, int, int]:
    """(CPU seconds, voluntary context switches, orders stored) of this process over
    ``seconds`` while its callers place orders (this thread places them too)."""

    def switches() -> int:
        total = 0
        for status in Path("/proc/self/task").glob("*/status"):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        return total

    first = app.recorder.max_notification_id() or 0
    cpu, before = time.process_time(), switches()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        app.place_order(**ORDER)
    cpu, after = time.process_time() - cpu, switches()
    return cpu, after - before, (app.recorder.max_notification_id() or 0) - first


def _frames_time(profiler: Profiler, function: str, parent: str | None = None) -> float:
    """Total time of the outermost frames of ``function`` (called from ``parent``)."""
    session = profiler.last_session
    assert session is not None
    total = 0.0
    stack = [session.root_frame()]
    while stack:
        frame = stack.pop()
        if frame is None:
            continue
        if frame.function == function and (
            parent is None or (frame.parent is not None and frame.parent.function == parent)
        ):
            total += frame.time
            continue
        stack.extend(frame.children)
    return total


# The scenario


def run(context: BenchContext) -> ScenarioResult:
    seconds = 1.5 if context.quick else 6.0
    max_calls = 3_000 if context.quick else 100_000
    clients = 8 if context.quick else CLIENTS
    rounds = 1 if context.quick else 3
    result = ScenarioResult(name="write path")
    with stores(context) as targets:
        for store, url_template, schema in targets:
            orders_url = _url(url_template, "orders")
            at = f"{store}, {clients} clients"

            with uvicorn("bench.scenarios.write_path:trivial_app", {}, context.work_dir) as url:
                ceiling = drive_http(url, clients, seconds)
            env = {
                "ORDERS_DATABASE_URL": orders_url,
                **({"ORDERS_DATABASE_SCHEMA": schema} if schema else {}),
            }
            with uvicorn("write_side.orders.api:create_app", env, context.work_dir) as url:
                http = drive_http(url, clients, seconds)

            # (b) and (c) take turns, so that a change in the machine's load (it is
            # shared) weighs on both alike; each side's median round is reported.
            library = library_application(_url(url_template, "library"), schema)
            app = open_application(OrdersApplication, _url(url_template, "direct"), schema)
            library_call = partial(library.place_order, **ORDER)
            grouped_call = partial(app.place_order, **ORDER)
            try:
                library_call()  # the first save sets SQLite's WAL mode: not concurrently
                grouped_call()
                drive(library_call, clients, seconds / 6, max_calls)  # warm-up
                drive(grouped_call, clients, seconds / 6, max_calls)
                library_runs, grouped_runs, library_pinned, grouped_pinned = [], [], [], []
                for _ in range(rounds):
                    library_runs.append(drive(library_call, clients, seconds / rounds, max_calls))
                    grouped_runs.append(drive(grouped_call, clients, seconds / rounds, max_calls))
                    with on_one_core():
                        library_pinned.append(
                            drive(library_call, clients, seconds / rounds, max_calls)
                        )
                        grouped_pinned.append(
                            drive(grouped_call, clients, seconds / rounds, max_calls)
                        )
                one_save_each, grouped = _median(library_runs), _median(grouped_runs)
                one_save_pinned, pinned = _median(library_pinned), _median(grouped_pinned)
                if store == "PostgreSQL":
                    result.notes += profile_notes(app, clients, seconds / 2)
            finally:
                app.close()
                library.close()

            raw = raw_insert_commit_loop(_url(url_template, "raw"), schema, seconds, max_calls)

            library_name = "eventsourcing library, one save per command"
            raw_name = "raw INSERT+COMMIT loop, 1 connection"
            result.measurements += [
                _row(
                    f"commands/s, group commit (Application), {at}",
                    grouped,
                    "commands/s",
                    (library_name, one_save_each),
                ),
                _row(
                    f"commands/s, group commit (Application), {at}, process on one core",
                    pinned,
                    "commands/s",
                    (f"{library_name}, on one core", one_save_pinned),
                ),
                _row(
                    f"commands/s, HTTP command API (group commit), {at}",
                    http,
                    "commands/s",
                    (library_name, one_save_each),
                ),
                _row(
                    f"requests/s, trivial FastAPI endpoint (stores nothing), {at}",
                    ceiling,
                    "requests/s",
                ),
                _row(
                    f"commands/s, {library_name}, {at}",
                    one_save_each,
                    "commands/s",
                    (raw_name, raw),
                ),
                _row(
                    f"commands/s, {library_name}, {at}, process on one core",
                    one_save_pinned,
                    "commands/s",
                    (raw_name, raw),
                ),
                _row(f"rows/s, {raw_name}, {store}", raw, "rows/s"),
            ]
            result.notes.append(
                f"{store}: {_verdict(grouped, one_save_each)}; on one core: "
                f"{_verdict(pinned, one_save_pinned)} (rounds: "
                f"{_ratios(grouped_runs, library_runs)} on both cores, "
                f"{_ratios(grouped_pinned, library_pinned)} on one); "
                f"HTTP {http.per_second:.0f}/s = {http.per_second / one_save_each.per_second:.1f}x, "
                f"p99 {http.p99:.1f} ms, under a trivial-endpoint ceiling of "
                f"{ceiling.per_second:.0f} req/s ({http.per_second / ceiling.per_second:.0%} of it)"
            )
    return result


def _row(what: str, run: Run, unit: str, baseline: tuple[str, Run] | None = None) -> Measurement:
    """A line of the table: ``run``'s rate and latencies, beside the rate of ``baseline``
    (its name and its run), if any."""
    name, against = baseline if baseline is not None else (None, None)
    return Measurement(
        what,
        run.per_second,
        unit,
        name,
        against.per_second if against is not None else None,
        run.p50,
        run.p95,
        run.p99,
    )


def _verdict(grouped: Run, one_save_each: Run) -> str:
    ratio = grouped.per_second / one_save_each.per_second
    met = "met" if ratio >= TARGET_RATIO and grouped.p99 < TARGET_P99_MS else "NOT met"
    return (
        f"group commit {grouped.per_second:.0f}/s vs library {one_save_each.per_second:.0f}/s "
        f"= {ratio:.1f}x at p99 {grouped.p99:.1f} ms (target >= {TARGET_RATIO:.0f}x, "
        f"p99 < {TARGET_P99_MS:.0f} ms: {met})"
    )


def _ratios(grouped: list[Run], one_save_each: list[Run]) -> str:
    """Each round's group commit over the library's run just before it."""
    return ", ".join(
        f"{g.per_second / o.per_second:.1f}x" for g, o in zip(grouped, one_save_each, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads (a smoke run)")
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as work_dir:
        context = BenchContext(
            kafka_bootstrap="",  # not used by this scenario
            mongo_url="",
            postgres_url=arguments.postgres_url,
            work_dir=Path(work_dir),
            image_dir=Path(work_dir),
            quick=arguments.quick,
        )
        result = run(context)
    print(f"{result.name}")
    for m in result.measurements:
        ratio = f"  {m.ratio:.1f}x {m.baseline_name}" if m.ratio is not None else ""
        latency = (
            f"  p50 {m.p50_ms:.1f} / p95 {m.p95_ms:.1f} / p99 {m.p99_ms:.1f} ms"
            if m.p99_ms is not None
            else ""
        )
        print(f"- {m.what}: {m.value:,.0f} {m.unit}{ratio}{latency}")
    for note in result.notes:
        print(note)


if __name__ == "__main__":
    main()
