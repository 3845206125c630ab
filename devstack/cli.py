"""The `cqrs` command line (`python -m devstack` too).

Each feature adds its subcommands with a `register(subparsers)` function listed in
`REGISTRARS`; a subcommand sets `handler=` to a function `(args) -> int` (exit code).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from devstack import contract_tools, gateway, identity, run, traces
from operations import dead_letters, replay
from scaffold import commands as scaffold
from scaffold import generated, prune

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

REGISTRARS: list[Registrar] = [
    run.register,
    traces.register,
    identity.register,
    gateway.register,
    contract_tools.register,
    dead_letters.register,
    replay.register,
    scaffold.register,
    prune.register,
    generated.register,
]


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="cqrs", description="Event-sourced CQRS template: local tooling."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the subcommand, return its exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return int(handler(args) or 0)
