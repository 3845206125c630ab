"""`cqrs contracts generate | check | asyncapi`: the contracts' schemas and documents.

- `generate` writes the JSON Schema of every contract version not committed yet into
  contracts/schemas/ and locks it; it never rewrites a committed schema.
- `check` fails (exit 1) on every breaking change without a new major, every schema
  edited in place, and every version not generated; each line names the contract, the
  field and the rule. `make lint` (so CI) runs it.
- `asyncapi` prints (or writes) the AsyncAPI 3 document of every topic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from contracts.asyncapi import document
from contracts.schemas import SCHEMAS_DIR, SchemaDirectory, check, generate


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    contracts = subparsers.add_parser(
        "contracts", help="event contracts: JSON Schemas, compatibility check, AsyncAPI"
    )
    commands = contracts.add_subparsers(dest="contracts_command", required=True, metavar="ACTION")
    for name, handler, text in (
        ("generate", _generate, "write the schemas of new contract versions (never rewrites)"),
        ("check", _check, "fail on breaking changes without a new major, or edited schemas"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument(
            "--schemas", type=Path, default=SCHEMAS_DIR, help="schema directory (%(default)s)"
        )
        command.set_defaults(handler=handler)
    asyncapi = commands.add_parser("asyncapi", help="print or write the AsyncAPI 3 document")
    asyncapi.add_argument("-o", "--output", type=Path, help="write it to this file")
    asyncapi.set_defaults(handler=_asyncapi)


def _generate(args: argparse.Namespace) -> int:
    directory = SchemaDirectory(args.schemas)
    written, refused = generate(directory)
    for file in written:
        print(f"wrote {file}")
    for problem in refused:
        print(f"not written: {problem}", file=sys.stderr)
    remaining = [problem for problem in check(directory) if problem not in refused]
    for problem in remaining:
        print(problem, file=sys.stderr)
    if not (written or refused or remaining):
        print("every contract version has its committed schema")
    return 1 if refused or remaining else 0


def _check(args: argparse.Namespace) -> int:
    problems = check(SchemaDirectory(args.schemas))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"contracts check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("contracts check: every contract matches its committed schema")
    return 0


def _asyncapi(args: argparse.Namespace) -> int:
    text = json.dumps(document(), indent=2, ensure_ascii=False) + "\n"
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0
