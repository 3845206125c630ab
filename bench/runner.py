"""Runs the selected scenarios against servers started once, and writes the report."""

import logging
import os
import shutil
import tempfile
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench import http as bench_http
from bench import machine, report
from bench.registry import Scenario
from bench.scenario import BenchContext, ScenarioResult
from devstack.servers import REPO_ROOT, KafkaBroker, MongoServer, ensure_secantus_venv

log = logging.getLogger("bench")

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REPORT = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_IMAGES = REPO_ROOT / "docs" / "img"


@dataclass(frozen=True)
class Options:
    quick: bool = False
    report_path: Path = DEFAULT_REPORT
    image_dir: Path = DEFAULT_IMAGES
    work_dir: Path | None = None  # default: a temporary directory, removed afterwards
    postgres_url: str = POSTGRES_URL
    note: str | None = None  # about this run, in the report's machine table


def run_scenario(scenario: Scenario, context: BenchContext) -> report.SectionRun:
    """One scenario; an exception becomes a FAILED section (the others still run)."""
    started, measured_on = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    log.info("scenario %s: %s", scenario.name, scenario.description)
    failed = False
    try:
        result = scenario.run(context)
    except Exception as error:  # noqa: BLE001 - reported, and the run exits non-zero
        log.error("scenario %s failed:\n%s", scenario.name, traceback.format_exc())
        result = ScenarioResult(scenario.description, notes=[f"failed: {error!r}"])
        failed = True
    seconds = time.monotonic() - started
    log.info("scenario %s done in %.0f s", scenario.name, seconds)
    return report.SectionRun(scenario.name, result, seconds, measured_on, context.quick, failed)


def run(selected: list[Scenario], every_name: list[str], options: Options) -> int:
    """Start the servers, run `selected`, write the report; 0 if every scenario ran."""
    work_dir = options.work_dir or Path(tempfile.mkdtemp(prefix="bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    bench_http.use_local_identity(work_dir / "auth")
    code = 1
    try:
        code = _run_on_servers(selected, every_name, options, work_dir)
    finally:
        if options.work_dir is None and code == 0:
            shutil.rmtree(work_dir, ignore_errors=True)
        elif code != 0:
            log.info("process logs and server data kept in %s", work_dir)
    return code


def _run_on_servers(
    selected: list[Scenario], every_name: list[str], options: Options, work_dir: Path
) -> int:
    with ExitStack() as stack:
        ensure_secantus_venv(quiet=True)
        broker = stack.enter_context(KafkaBroker(work_dir / "kafka"))
        mongo = stack.enter_context(MongoServer(work_dir / "mongo"))
        log.info("broker %s, MongoDB %s, work dir %s", broker.bootstrap, mongo.url, work_dir)
        context = BenchContext(
            kafka_bootstrap=broker.bootstrap,
            mongo_url=mongo.url,
            postgres_url=options.postgres_url,
            work_dir=work_dir,
            image_dir=options.image_dir,
            quick=options.quick,
        )
        return run_scenarios(context, selected, every_name, options)


def run_scenarios(
    context: BenchContext, selected: list[Scenario], every_name: list[str], options: Options
) -> int:
    """Run `selected` on servers already running, write the report; 0 if every one ran."""
    described = machine.describe(options.postgres_url)
    runs = []
    for scenario in selected:
        scenario_dir = context.work_dir / scenario.name
        scenario_dir.mkdir(exist_ok=True)
        runs.append(run_scenario(scenario, replace(context, work_dir=scenario_dir)))
    described = replace(described, load_after=os.getloadavg())
    path = report.write(options.report_path, described, runs, every_name, options.note)
    log.info("wrote %s", path)
    return 1 if any(r.failed for r in runs) else 0
