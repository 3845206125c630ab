"""`python -m bench.chaos` (`make chaos`): seeded chaos rounds, then the report.

Round i of a run with `--seed S` uses seed S + i - 1, so any round can be run again alone:
`python -m bench.chaos --seed <its seed> --rounds 1`. Everything runs on 127.0.0.1 in a
temporary folder, removed at the end; a failed round's folder (logs, stores, the broker's
data) is copied to `var/chaos/seed-<seed>/` first.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench.chaos.report import render
from bench.chaos.rounds import RoundResult, RoundSettings, run_round
from bench.chaos.schedule import SERVERS
from bench.chaos.system import KINDS, standby_relays
from devstack.servers import REPO_ROOT, MongoServer, ensure_secantus_venv

log = logging.getLogger("chaos")

ALL_KINDS = (*KINDS, *SERVERS)
KEPT = REPO_ROOT / "var" / "chaos"


def run(rounds: int, seed: int, settings: RoundSettings) -> list[RoundResult]:
    """`rounds` rounds, each with a fresh system, sharing one MongoDB-compatible server."""
    ensure_secantus_venv(quiet=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="chaos-") as temporary:
        work = Path(temporary)
        with MongoServer(work / "mongo") as mongo:
            for number in range(1, rounds + 1):
                round_seed = seed + number - 1
                log.info("round %d of %d (seed %d)", number, rounds, round_seed)
                round_work = work / f"round-{number}"
                round_work.mkdir()
                result = run_round(number, round_seed, settings, mongo, round_work)
                log.info(
                    "round %d: %s in %.0f s",
                    number,
                    "pass" if result.passed else "FAIL",
                    result.seconds.get("total", 0),
                )
                if not result.passed:
                    for check in result.checks:
                        if not check.passed:
                            log.warning("FAIL: %s\n%s", check.name, "\n".join(check.problems[:12]))
                    result.logs = keep(round_work, round_seed)
                shutil.rmtree(round_work, ignore_errors=True)
                results.append(result)
    return results


def keep(round_work: Path, seed: int) -> Path:
    """A copy of the failed round's folder, to look into; returns where its logs are."""
    kept = KEPT / f"seed-{seed}"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(round_work, kept, dirs_exist_ok=True)
    return kept / "logs"


def kinds(value: str) -> tuple[str, ...]:
    chosen = tuple(k.strip() for k in value.split(",") if k.strip())
    if unknown := [k for k in chosen if k not in ALL_KINDS]:
        raise argparse.ArgumentTypeError(f"unknown kind {', '.join(unknown)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="the first round's seed")
    parser.add_argument("--rate", type=float, default=RoundSettings.rate, help="orders/s")
    parser.add_argument(
        "--seconds", type=float, default=RoundSettings.seconds, help="of load per round"
    )
    parser.add_argument(
        "--kills", type=int, default=RoundSettings.kills, help="process kills per round"
    )
    parser.add_argument(
        "--kill",
        type=kinds,
        default=ALL_KINDS,
        help=f"what the schedule may kill or restart, of {','.join(ALL_KINDS)} (default: all)",
    )
    parser.add_argument(
        "--relays",
        type=int,
        default=None,
        help="relays per service (default: 2 where relays elect a leader, else 1)",
    )
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "docs" / "chaos.md")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    relays = args.relays if args.relays is not None else 2 if standby_relays() else 1
    settings = RoundSettings(
        rate=args.rate,
        seconds=args.seconds,
        kills=args.kills,
        kinds=args.kill,
        relays_per_service=relays,
    )
    # SIGTERM unwinds like Ctrl-C: every process and server started is stopped by PID.
    signal.signal(signal.SIGTERM, _exit)
    started = time.monotonic()
    results = run(args.rounds, args.seed, settings)
    elapsed = time.monotonic() - started
    command = "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.no_report:
        args.report.write_text(render(results, settings, command.strip(), elapsed))
        log.info("report: %s", args.report)
    passed = sum(r.passed for r in results)
    log.info("%d of %d rounds passed in %.1f min", passed, len(results), elapsed / 60)
    return 0 if passed == len(results) else 1


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
