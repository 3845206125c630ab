"""`python -m bench [SCENARIO ...] [--quick]`: run benchmark scenarios, write the report."""

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from bench import registry
from bench.runner import DEFAULT_IMAGES, DEFAULT_REPORT, POSTGRES_URL, Options, run


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmark scenarios beside their raw baselines and write "
        "docs/benchmarks.md and its charts. Without names, every scenario runs; with "
        "names, only their sections of the report are rewritten.",
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="see --list")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--quick", action="store_true", help="tiny workloads: a smoke run, numbers mean nothing"
    )
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="%(default)s")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="%(default)s")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep servers' data and process logs here (default: a "
        "temporary directory, removed afterwards)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="%(default)s")
    parser.add_argument("--note", help="a remark on this run for the report's machine table")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM stops a run as Ctrl-C does: the servers and processes it started are
    # stopped by PID on the way out, not left running.
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s | %(message)s")
    logging.getLogger("bench").setLevel(logging.INFO)
    available = registry.discover()
    if args.list:
        for scenario in available:
            print(f"{scenario.name:<14} {scenario.description}")
        return 0
    try:
        selected = registry.select(args.scenarios, available)
    except registry.UnknownScenario as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = Options(
        quick=args.quick,
        report_path=args.report,
        image_dir=args.images,
        work_dir=args.work_dir,
        postgres_url=args.postgres_url,
        note=args.note,
    )
    try:
        return run(selected, [s.name for s in available], options)
    except KeyboardInterrupt as stop:
        print(
            f"bench: stopped ({str(stop) or 'Ctrl-C'}); the report was not written", file=sys.stderr
        )
        return 130
