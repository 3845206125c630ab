"""`cqrs replay` and `cqrs projections status|drop`: rebuild read models, see how far
each projection has got, drop retired collections.

The composition root of the rebuild: it opens every service's event store with the
service's own settings (`<SERVICE>_DATABASE_URL`, `<SERVICE>_DATABASE_SCHEMA`) and its
relay's contract mapping, and MongoDB and Kafka with the projections' settings
(`MONGODB_URL`, `MONGODB_DATABASE`, `KAFKA_BOOTSTRAP_SERVERS`). The work itself is
`kernel.replay` (ADR 14).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, Notification
from pymongo import AsyncMongoClient
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from kernel.application import ServiceApplication
from kernel.projection import Projection
from kernel.projection_catalog import Catalog
from kernel.projections_status import projections_status
from kernel.relay import ContractEncoder, ContractMapping
from kernel.replay import Replay, ReplayError, ReplayOptions, ReplaySummary, StoreLog
from kernel.settings import RelaySettings
from kernel.store import MetadataMapper
from projections.registry import PROJECTIONS as ALL_PROJECTIONS
from projections.settings import ProjectionSettings

PROJECTIONS: dict[str, Projection] = {p.name: p for p in ALL_PROJECTIONS}
EXIT_NOT_SWITCHED = 1  # the shadow check found differences (use --force to switch anyway)
EXIT_ERROR = 2


@dataclass(frozen=True)
class Service:
    """How to open one service's store and map its events to contracts."""

    open: Callable[[], ServiceApplication]
    to_contract: ContractMapping


def service_of(name: str) -> Service:
    """The service whose topic is ``name``, found by the shape every service has
    (``write_side/<name>/{bootstrap,settings,relay}.py``, ``<Name>Settings``)."""
    package = f"write_side.{name}"
    try:
        bootstrap = importlib.import_module(f"{package}.bootstrap")
        settings_module = importlib.import_module(f"{package}.settings")
        relay = importlib.import_module(f"{package}.relay")
    except ModuleNotFoundError as error:
        raise ReplayError(f"no service {name!r} to read events from: {error}") from error
    settings_class: type[RelaySettings] = getattr(
        settings_module, "".join(part.capitalize() for part in name.split("_")) + "Settings"
    )
    return Service(lambda: bootstrap.build_application(settings_class()), relay.to_contract)


@contextmanager
def store_logs(sources: set[str]) -> Iterator[list[StoreLog]]:
    """The event stores of these services, opened with their own settings."""
    apps: list[ServiceApplication] = []
    try:
        logs = []
        for source in sorted(sources):
            service = service_of(source)
            app = service.open()
            apps.append(app)
            logs.append(store_log(source, app, service.to_contract))
        yield logs
    finally:
        for app in apps:
            app.close()


def store_log(source: str, app: ServiceApplication, to_contract: ContractMapping) -> StoreLog:
    """One open service's event store as a rebuild reads it."""
    assert isinstance(app.mapper, MetadataMapper)
    return StoreLog(
        source=source,
        read=partial(_read_notifications, app.recorder),
        last_position=partial(_last_position, app.recorder),
        envelope=ContractEncoder(source, app.mapper, to_contract).envelope,
    )


def _read_notifications(
    recorder: ApplicationRecorder, start: int, limit: int, stop: int
) -> Sequence[Notification]:
    return recorder.select_notifications(start, limit, stop)


def _last_position(recorder: ApplicationRecorder) -> int:
    return recorder.max_notification_id() or 0


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "- events/s", style="cyan")


class ProgressBar:
    """A rich progress bar per phase: events done of the total, rate, ETA."""

    def __init__(self, progress: Progress, projection: str):
        self.progress = progress
        self.projection = projection
        self.task: TaskID | None = None

    def phase(self, name: str, total: int | None) -> None:
        if self.task is not None:
            self.progress.stop_task(self.task)
        self.task = self.progress.add_task(f"{self.projection}: {name}", total=total)

    def advance(self, events: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, events)


def replay_command(args: argparse.Namespace) -> int:
    if args.all == bool(args.names):
        print("cqrs replay: name projections or give --all", file=sys.stderr)
        return EXIT_ERROR
    unknown = [name for name in args.names if name not in PROJECTIONS]
    if unknown:
        print(
            f"cqrs replay: unknown projection {', '.join(unknown)} "
            f"(known: {', '.join(PROJECTIONS)})",
            file=sys.stderr,
        )
        return EXIT_ERROR
    projections = list(PROJECTIONS.values()) if args.all else [PROJECTIONS[n] for n in args.names]
    options = ReplayOptions(
        source=args.source,
        batch_size=args.batch_size,
        from_position=args.from_position,
        resume=args.resume,
        switch=not args.no_switch,
        force=args.force,
    )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        summaries = asyncio.run(_replay(projections, options))
    except ReplayError as error:
        print(f"cqrs replay: {error}", file=sys.stderr)
        return EXIT_ERROR
    console = Console()
    for summary in summaries:
        console.print(_describe(summary))
    if any(options.switch and not s.switched for s in summaries):
        return EXIT_NOT_SWITCHED
    return 0


async def _replay(projections: list[Projection], options: ReplayOptions) -> list[ReplaySummary]:
    settings = ProjectionSettings()
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongodb_url)
    sources = {t for p in projections for t in p.topics} if options.source == "stores" else set()
    summaries = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    try:
        with store_logs(sources) as logs, Progress(*columns, transient=False) as progress:
            for projection in projections:
                replay = Replay(
                    projection,
                    client[settings.mongodb_database],
                    settings.kafka_bootstrap_servers,
                    logs,
                    options,
                    ProgressBar(progress, projection.name),
                )
                summaries.append(await replay.run())
    finally:
        await client.close()
    return summaries


def _describe(summary: ReplaySummary) -> str:
    lines = [
        (
            f"[bold]{summary.projection}[/bold] → {summary.collection} (from {summary.source}): "
            f"{summary.events:,} events, {summary.written:,} document writes, "
            f"{summary.skipped} skipped, {summary.seconds:.1f} s ({summary.rate:,.0f} events/s)"
        )
    ]
    if summary.shadow is not None:
        lines.append(f"  shadow check against {summary.previous}: {summary.shadow.describe()}")
    if summary.switched:
        lines.append(
            f"  switched: the query API now reads {summary.collection}; {summary.previous} is "
            f"kept until `cqrs projections drop {summary.previous}`"
        )
    elif summary.shadow is not None:
        lines.append("  [red]not switched[/red]: check the differences, or run with --force")
    else:
        lines.append("  built, not switched (--no-switch)")
    return "\n".join(lines)


def status_command(args: argparse.Namespace) -> int:
    settings = ProjectionSettings()

    async def read() -> list[dict[str, Any]]:
        client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
        try:
            return await projections_status(
                client[settings.mongodb_database], settings.kafka_bootstrap_servers
            )
        finally:
            await client.close()

    statuses = asyncio.run(read())
    if args.json:
        print(json.dumps(statuses, default=str, indent=2))
        return 0
    console = Console()
    table = Table("projection", "collection", "version", "lag (events)", "lag (s)", "rebuilds")
    for status in statuses:
        rebuilds = ", ".join(
            f"{b['collection']} {b['state']} {b['events']:,} events" for b in status["rebuilds"]
        )
        if status["draining"]:
            rebuilds = ", ".join(filter(None, ["draining into it", rebuilds]))
        table.add_row(
            status["projection"],
            status["collection"],
            str(status["version"]),
            _or_dash(status["lag_events"]),
            _or_dash(status["lag_seconds"]),
            rebuilds or "-",
        )
    console.print(table)
    return 0


def _or_dash(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def drop_command(args: argparse.Namespace) -> int:
    settings = ProjectionSettings()

    async def drop() -> None:
        client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongodb_url)
        try:
            await Catalog(client[settings.mongodb_database]).drop(args.collection)
        finally:
            await client.close()

    try:
        asyncio.run(drop())
    except ValueError as error:
        print(f"cqrs projections drop: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"dropped {args.collection}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="rebuild projections into new collections, then switch the query API to them",
        description="Rebuild read models while the live ones keep serving (ADR 14).",
    )
    replay.add_argument("names", nargs="*", metavar="NAME", help=", ".join(PROJECTIONS))
    replay.add_argument("--all", action="store_true", help="every projection")
    replay.add_argument(
        "--source",
        choices=("stores", "kafka"),
        default="stores",
        help="the event stores directly (default, no broker) or the topics from the start",
    )
    replay.add_argument(
        "--from-position",
        type=int,
        default=0,
        metavar="N",
        help="apply only events after position N of their own log (incremental)",
    )
    replay.add_argument(
        "--resume",
        action="store_true",
        help="continue the last unfinished rebuild, or finish a drain that was stopped",
    )
    replay.add_argument(
        "--force", action="store_true", help="switch even if the shadow check finds differences"
    )
    replay.add_argument(
        "--no-switch", action="store_true", help="build and catch up, but do not switch"
    )
    replay.add_argument(
        "--batch-size", type=int, default=2000, metavar="N", help="events per bulk write"
    )
    replay.set_defaults(handler=replay_command)

    projections = subparsers.add_parser("projections", help="projection status; drop old builds")
    actions = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", help="each projection's live collection, lag, and rebuilds in progress"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=status_command)
    drop = actions.add_parser("drop", help="drop a retired or abandoned build (never the live one)")
    drop.add_argument("collection", metavar="COLLECTION")
    drop.set_defaults(handler=drop_command)
