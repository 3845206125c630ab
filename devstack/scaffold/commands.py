"""The generator's subcommands of `cqrs`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from devstack.scaffold import changes, generate
from devstack.scaffold.names import FIELD_TYPES

FIELD_HELP = f"a field as name:type ({', '.join(FIELD_TYPES)}); repeat for more"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `new-domain`, `new-event`, `new-projection` and `new-reaction` to `cqrs`."""
    parser = subparsers.add_parser(
        "new-domain",
        help="generate a bounded context: service, contract, projection, query routes, tests",
    )
    parser.add_argument("name", help="the service's name, lower snake case (e.g. shipments)")
    parser.add_argument("--aggregate", help="the aggregate's class name (default: from NAME)")
    _common(parser)
    parser.set_defaults(
        handler=lambda args: _run(
            args, lambda root: generate.new_domain(root, args.name, args.aggregate, args.field)
        )
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--field", action="append", default=[], metavar="NAME:TYPE", help=FIELD_HELP
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would change, change nothing"
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project (default: .)")


def _run(args: argparse.Namespace, plan: generate.Planner) -> int:
    started = time.monotonic()
    root = args.root.resolve()
    try:
        planned = plan(root)
        for line in planned.describe():
            print(line)
        if args.dry_run:
            print("dry run: nothing was changed")
            return 0
        changes.apply(root, planned)
    except changes.ScaffoldError as error:
        print(f"error: {error}")
        return 2
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0
