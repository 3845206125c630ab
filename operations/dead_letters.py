"""`cqrs dead-letters list | show | stats | republish`: the dead-letter topics, by hand.

Exit codes: 0 done, 1 the broker failed or timed out, 2 bad input (nothing sent).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence

from aiokafka.errors import KafkaError

from kernel.dead_letters import (
    DeadLetter,
    DeadLetterError,
    DeadLetterTopics,
    Filter,
    Planned,
    Republication,
    counts,
    plan,
    republish,
    safe_text,
)
from kernel.settings import KafkaSettings
from kernel.sync import run_sync
from operations.text_table import table

REASON_WIDTH = 100


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dead-letters` and its subcommands to the `cqrs` command line."""
    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument(
        "--bootstrap", help="the Kafka brokers; default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092"
    )
    broker.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument("--topic", help="only dead letters from this topic (e.g. orders)")
    which.add_argument("--consumer", help="only those this consumer rejected (e.g. orders-saga)")
    which.add_argument("--reason-contains", metavar="TEXT", help="only reasons containing TEXT")

    parser = subparsers.add_parser(
        "dead-letters", help="list, show, count and re-publish dead-lettered messages"
    )
    commands = parser.add_subparsers(dest="dead_letters_command", required=True, metavar="COMMAND")

    listing = commands.add_parser(
        "list", parents=[broker, which], help="every dead letter: where from, who, why"
    )
    listing.set_defaults(handler=_command(_list))

    show = commands.add_parser(
        "show", parents=[broker], help="one dead letter whole: headers and value"
    )
    show.add_argument("id", help="e.g. orders.dead-letters:0:12")
    show.set_defaults(handler=_command(_show))

    stats = commands.add_parser(
        "stats", parents=[broker, which], help="dead letters per consumer and reason kind"
    )
    stats.set_defaults(handler=_command(_stats))

    again = commands.add_parser(
        "republish",
        parents=[broker, which],
        help="send dead letters back to their original topic (after a fix)",
        description="Send each dead letter's original key, value and headers back to the "
        "topic and partition it came from, with a dlq_republished_from header, and record "
        "that it was. Name dead letters by id, or choose them with --all and the filters.",
    )
    again.add_argument("ids", nargs="*", metavar="ID", help="e.g. orders.dead-letters:0:12")
    again.add_argument(
        "--all",
        action="store_true",
        help="every dead letter the filters match not yet re-published",
    )
    again.add_argument(
        "--again", action="store_true", help="also those re-published already (a second copy)"
    )
    again.add_argument(
        "--dry-run", action="store_true", help="print what would be sent; send nothing"
    )
    again.set_defaults(handler=_command(_republish))


def _command(
    work: Callable[[argparse.Namespace, DeadLetterTopics], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        args.bootstrap = args.bootstrap or KafkaSettings().kafka_bootstrap_servers

        async def run() -> int:
            async with DeadLetterTopics(args.bootstrap, args.timeout) as topics:
                return await work(args, topics)

        try:
            return run_sync(run)
        except DeadLetterError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except (KafkaError, TimeoutError, OSError) as error:
            print(f"error: {args.bootstrap}: {error!r}", file=sys.stderr)
            return 1

    return handler


def _filter(args: argparse.Namespace) -> Filter:
    return Filter(args.topic, args.consumer, args.reason_contains)


async def _list(args: argparse.Namespace, topics: DeadLetterTopics) -> int:
    letters = await topics.letters(_filter(args))
    republished = await topics.republications({letter.topic for letter in letters})
    if not letters:
        print("no dead letters")
        return 0
    rows = [
        (
            letter.id,
            letter.origin,
            letter.consumer,
            letter.kind,
            letter.header("ce_type"),
            _short_time(letter.header("dlq_time")),
            _republished(republished.get(letter.origin, [])),
            _shorten(letter.reason),
        )
        for letter in letters
    ]
    headers = ("id", "from", "consumer", "kind", "type", "time", "republished", "reason")
    print(table(headers, rows))
    return 0


async def _show(args: argparse.Namespace, topics: DeadLetterTopics) -> int:
    letter = await topics.fetch(args.id)
    republished = await topics.republications([letter.topic])
    fields = [
        ("dead letter", letter.id),
        ("from", letter.origin),
        ("consumer", letter.consumer),
        ("kind", letter.kind),
        ("reason", letter.reason),
        ("time", letter.header("dlq_time")),
        ("republished", _republished(republished.get(letter.origin, []), detail=True)),
        ("key", "-" if letter.key is None else safe_text(letter.key)),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name:<{width}}  {value or '-'}")
    print("headers")
    for header, raw in letter.headers:
        print(f"  {header}: {safe_text(raw)}")
    print(_value(letter.value))
    return 0


async def _stats(args: argparse.Namespace, topics: DeadLetterTopics) -> int:
    letters = await topics.letters(_filter(args))
    republished = await topics.republications({letter.topic for letter in letters})
    totals = counts(letters, republished)
    if not totals:
        print("no dead letters")
        return 0
    rows = [(consumer, kind, n, r) for (consumer, kind), (n, r) in totals.items()]
    rows.append(("total", "", len(letters), sum(r for _, _, _, r in rows)))
    print(table(("consumer", "kind", "dead letters", "republished"), rows))
    return 0


async def _republish(args: argparse.Namespace, topics: DeadLetterTopics) -> int:
    filtering = any((args.topic, args.consumer, args.reason_contains))
    if args.ids and (args.all or filtering):
        raise DeadLetterError("name dead letters by id, or choose them with --all and filters")
    if not args.ids and not args.all:
        raise DeadLetterError("name the dead letters to re-publish, or give --all")
    if args.ids:
        letters = [await topics.fetch(dead_letter_id) for dead_letter_id in dict.fromkeys(args.ids)]
    else:
        letters = await topics.letters(_filter(args))
    republished = await topics.republications({letter.topic for letter in letters})
    before = [letter for letter in letters if letter.origin in republished]
    if before and not args.again:
        if args.ids:
            raise DeadLetterError(
                "re-published already: "
                + ", ".join(
                    f"{letter.id} (as {republished[letter.origin][-1].republished_as})"
                    for letter in before
                )
                + "; add --again to send another copy"
            )
        print(f"skipping {len(before)} re-published already (--again sends them again)")
        letters = [letter for letter in letters if letter.origin not in republished]
    plans = _one_per_origin(letters)
    if not plans:
        print("nothing to re-publish")
        return 0
    if args.dry_run:
        for planned in plans:
            print(f"would re-publish {_describe(planned)}")
        print(f"dry run: {len(plans)} message(s), nothing sent")
        return 0
    for republication in await republish(args.bootstrap, plans):
        print(f"re-published {republication.dead_letter} as {republication.republished_as}")
    return 0


def _one_per_origin(letters: Sequence[DeadLetter]) -> list[Planned]:
    """One copy per original message: every consumer of its topic reads it again, so
    the dead letters several consumers made of one message need it sent once."""
    first: dict[str, DeadLetter] = {}
    for letter in letters:
        if letter.origin in first:
            print(
                f"{letter.id} holds the same message as {first[letter.origin].id} "
                f"({letter.origin}): sent once"
            )
        else:
            first[letter.origin] = letter
    return [plan(letter) for letter in first.values()]


def _describe(planned: Planned) -> str:
    headers = ", ".join(f"{name}={safe_text(value)}" for name, value in planned.headers)
    key = "-" if planned.key is None else safe_text(planned.key)
    size = 0 if planned.value is None else len(planned.value)
    return (
        f"{planned.letter.id} to {planned.topic}[{planned.partition}]: "
        f"key {key}, {size} bytes, headers {headers}"
    )


def _republished(found: Sequence[Republication], detail: bool = False) -> str | None:
    if not found:
        return None
    last = found[-1]
    text = f"as {last.republished_as}"
    if detail:
        text += f" at {last.at} by {last.by}"
    return text if len(found) == 1 else f"{text} ({len(found)} times)"


def _short_time(iso: str | None) -> str | None:
    """``2026-11-23T12:55:00.335653+00:00`` → ``2026-11-23 12:55:00`` (UTC, as recorded)."""
    return iso[:19].replace("T", " ") if iso else None


def _shorten(reason: str) -> str:
    return reason if len(reason) <= REASON_WIDTH else reason[: REASON_WIDTH - 1] + "…"


def _value(value: bytes | None) -> str:
    if value is None:
        return "value: none"
    try:
        parsed = json.loads(value)
    except ValueError:
        return f"value ({len(value)} bytes, not JSON)\n  {safe_text(value)}"
    pretty = json.dumps(parsed, indent=2, ensure_ascii=False)
    return f"value ({len(value)} bytes, JSON)\n" + "\n".join(
        f"  {line}" for line in pretty.splitlines()
    )
