"""The benchmark runner: scenarios are found, and a quick run writes the report's table.

Structure only: speed is never asserted in a test.
"""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from pymongo import AsyncMongoClient

from bench import flows, registry
from bench.runner import Options, run_scenarios
from bench.scenario import BenchContext
from bench.scenarios import idle
from bench.scenarios.write_path import drive_http, uvicorn
from tests.stores import POSTGRES_URL
from tests.support import wait_for

MINE = {"end_to_end", "idle", "projection", "query_api", "relay", "saga"}


def test_every_module_with_a_run_function_is_a_scenario_and_names_are_forgiving():
    available = registry.discover()
    names = [scenario.name for scenario in available]
    assert MINE <= set(names)
    assert names == sorted(names)
    assert [s.name for s in registry.select(["Query-API", "relay"], available)] == [
        "query_api",
        "relay",
    ]
    with pytest.raises(registry.UnknownScenario, match="nope"):
        registry.select(["nope"], available)


def test_a_quick_run_of_one_scenario_writes_its_table_and_keeps_the_other_sections(
    kafka_bootstrap: str, mongo_url: str, tmp_path: Path
):
    report, images = tmp_path / "benchmarks.md", tmp_path / "img"
    report.write_text(
        "<!-- begin:saga -->\n## saga\n\nkept from an earlier run\n<!-- end:saga -->\n"
    )
    context = BenchContext(
        kafka_bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        postgres_url=POSTGRES_URL,
        work_dir=tmp_path / "work",
        image_dir=images,
        quick=True,
    )
    context.work_dir.mkdir()
    available = registry.discover()
    options = Options(quick=True, report_path=report, image_dir=images)
    code = run_scenarios(
        context, registry.select(["relay"], available), [s.name for s in available], options
    )

    text = report.read_text()
    assert code == 0, text
    relay = text[text.index("<!-- begin:relay -->") : text.index("<!-- end:relay -->")]
    assert "| measurement | value | raw baseline | ratio |" in relay
    row = next(line for line in relay.splitlines() if line.startswith("| SQLite store"))
    assert "raw aiokafka producer" in row and "**" in row  # a ratio, in bold
    assert "quick smoke run" in relay
    assert "Profile of the relay" in relay
    assert "![relay-throughput](img/relay-throughput.png)" in relay
    assert (images / "relay-throughput.png").stat().st_size > 0
    assert "kept from an earlier run" in text
    assert "## Machine" in text and "cores" in text
    for name in MINE - {"relay"}:
        assert f"<!-- begin:{name} -->" in text


def test_the_http_load_client_counts_answers_and_a_refused_command_stops_the_run(tmp_path: Path):
    with uvicorn("bench.scenarios.write_path:trivial_app", {}, tmp_path) as url:
        run = drive_http(url, clients=4, seconds=0.3)
    assert run.per_second > 0 and run.p50 > 0

    refusing = uvicorn("tests.reference_saga.integration.test_bench:refusing_app", {}, tmp_path)
    with refusing as url, pytest.raises(RuntimeError, match="POST /orders failed"):
        drive_http(url, clients=2, seconds=0.2)


def refusing_app() -> FastAPI:
    """A server that answers /health and refuses every order (422)."""
    api = FastAPI()

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/orders")
    def place_order() -> None:
        raise HTTPException(422, "refused")

    return api


def test_the_idle_scenario_runs_the_procfile_but_the_demo_with_cqrs_runs_settings(tmp_path: Path):
    entries = idle.procfile_entries()
    assert "demo" not in entries
    assert {"orders-api", "orders-relay", "orders-saga", "projections", "query-api"} <= set(entries)
    env = idle.stack_environment(tmp_path, kafka_port=1111, mongo_port=2222)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1111"
    assert "127.0.0.1:2222" in env["MONGODB_URL"]
    assert env["ORDERS_DATABASE_URL"] == f"sqlite:///{tmp_path}/orders.db"
    assert env["KAFKA_FETCH_WAKEUP_DIR"] == str(tmp_path / "kafka-wakeups")
    ports = [env[name] for name in idle.API_PORTS]
    assert len(set(ports)) == len(ports)
    assert env["ORDERS_API_URL"] == f"http://127.0.0.1:{env['ORDERS_API_PORT']}"


def _processes_naming(text: str) -> list[int]:
    """PIDs whose command line names ``text`` (to see what is left; nothing is killed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue  # it ended meanwhile
    return found


def test_sigterm_stops_a_run_as_ctrl_c_does_and_leaves_no_process_behind(tmp_path: Path):
    work = tmp_path / "work"
    log = tmp_path / "bench.log"
    command = [sys.executable, "-m", "bench", "relay", "--quick", "--work-dir", str(work)]
    command += ["--report", str(tmp_path / "report.md"), "--images", str(tmp_path / "img")]
    with log.open("wb") as output:
        bench = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "scenario relay" in log.read_text(), timeout=120)
        assert _processes_naming(str(work))  # its broker and SecantusDB run
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) == 130
    finally:
        if bench.poll() is None:
            bench.kill()
    assert "bench: stopped (SIGTERM); the report was not written" in log.read_text()
    wait_for(lambda: not _processes_naming(str(work)), timeout=30)
    assert not (tmp_path / "report.md").exists()


async def test_the_watcher_times_each_document_until_it_matches_and_counts_the_missing(
    mongo_url: str, mongo_database: str
):
    """The read model's changes, followed from before the first command: a document
    that matches later, one that matched before its id came back, one that never does."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    orders = client[mongo_database]["orders"]
    later: list[str] = []

    async def place(i: int) -> str | None:
        key = f"order-{i}"
        status = "APPROVED" if i == 1 else "APPROVAL_PENDING"  # 1 matches at once
        await orders.insert_one({"_id": key, "status": status})
        if i == 0:
            later.append(key)
        if i == 1:
            await asyncio.sleep(0.3)  # its answer comes late: the change comes first
        return key

    async def approve_later() -> None:
        deadline = time.monotonic() + 10
        while not later and time.monotonic() < deadline:  # order-0 placed
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await orders.update_one({"_id": later[0]}, {"$set": {"status": "APPROVED"}})

    try:
        approving = asyncio.create_task(approve_later())
        flow = await flows.offer(
            place, orders, {"status": "APPROVED"}, rate=50, count=3, drain_timeout=3
        )
        await approving
    finally:
        await client.close()

    seen = {c.key: c.seen - c.accepted for c in flow.completions}
    assert set(seen) == {"order-0", "order-1"}
    assert 0.2 <= seen["order-0"] < 2.0
    assert seen["order-1"] < 0  # seen before its answer came back ...
    assert min(flow.effect) == 0.0  # ... which counts as no wait
    assert flow.missing == 1  # order-2 never matched


async def test_a_change_stream_that_ends_fails_the_run_at_once_not_after_the_drain(
    mongo_url: str, mongo_database: str
):
    """Dropping the collection invalidates the stream: no order can be seen any more."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    orders = client[mongo_database]["orders"]

    async def place(i: int) -> str | None:
        await orders.insert_one({"_id": f"order-{i}", "status": "APPROVAL_PENDING"})
        if i == 0:
            await orders.drop()
        return f"order-{i}"

    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="change stream ended"):
            await flows.offer(
                place, orders, {"status": "APPROVED"}, rate=20, count=2, drain_timeout=60
            )
    finally:
        await client.close()
    assert time.monotonic() - started < 30
