"""The generator's subcommands of `cqrs`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from scaffold.changes import ScaffoldError, apply
from scaffold.names import FIELD_TYPES

if TYPE_CHECKING:
    from scaffold.changes import Changes

FIELD_HELP = f"a field as name:type ({', '.join(FIELD_TYPES)}); repeat for more"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `new-domain`, `new-event`, `new-projection` and `new-reaction` to `cqrs`."""
    parser = subparsers.add_parser(
        "new-domain",
        help="generate a bounded context: service, contract, projection, query routes, tests",
    )
    parser.add_argument("name", help="the service's name, lower snake case (e.g. shipments)")
    parser.add_argument("--aggregate", help="the aggregate's class name (default: from NAME)")
    _fields(parser)
    _common(parser, "new_domain", lambda args: (args.name, args.aggregate, args.field))

    parser = subparsers.add_parser(
        "new-event", help="add an event to a domain: command, route, contract, relay, read model"
    )
    parser.add_argument("domain", help="a domain made by new-domain")
    parser.add_argument("event", help="the contract event's name, CamelCase (ShipmentDispatched)")
    parser.add_argument("--command", help="the aggregate's command (default: record_<event>)")
    _fields(parser)
    _common(parser, "new_event", lambda args: (args.domain, args.event, args.field, args.command))

    parser = subparsers.add_parser(
        "new-projection", help="add a read model of a domain's events (each aggregate's history)"
    )
    parser.add_argument("domain", help="a domain made by new-domain")
    parser.add_argument("name", help="the read model's name, lower snake case")
    _common(parser, "new_projection", lambda args: (args.domain, args.name))

    parser = subparsers.add_parser(
        "new-reaction",
        help="add a saga reaction: another service's event makes this domain's aggregate",
    )
    parser.add_argument("domain", help="a domain made by new-domain")
    parser.add_argument(
        "--on", required=True, metavar="SERVICE.EVENT", help="e.g. orders.OrderCreated"
    )
    _common(parser, "new_reaction", lambda args: (args.domain, args.on))


def _fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--field", action="append", default=[], metavar="NAME:TYPE", help=FIELD_HELP
    )


def _common(
    parser: argparse.ArgumentParser,
    generator: str,
    arguments: Callable[[argparse.Namespace], tuple[object, ...]],
) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would change, change nothing"
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project (default: .)")
    parser.set_defaults(handler=lambda args: _run(args, generator, arguments(args)))


def _run(args: argparse.Namespace, generator: str, arguments: tuple[object, ...]) -> int:
    # Imported here: copier is dev tooling, and `cqrs` also runs in the service images.
    from scaffold import generate

    started = time.monotonic()
    root = args.root.resolve()
    try:
        planned: Changes = getattr(generate, generator)(root, *arguments)
        for line in planned.describe():
            print(line)
        if args.dry_run:
            print("dry run: nothing was changed")
            return 0
        apply(root, planned)
    except ScaffoldError as error:
        print(f"error: {error}")
        return 2
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0
