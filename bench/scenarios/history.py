"""history: a command on an aggregate with 10,000 events beside one with 10.

An ``Account`` (the accounting service) is loaded by every command on it, and a
regular customer's account grows with every order. Here one account has 10 events and
another 10,000; the same commands (blocking and unblocking the card, one after
another, each its own transaction) run on each, on SQLite and on PostgreSQL, with the
service's settings (snapshots every 50 events and the aggregate cache), with snapshots
only, and with neither (every load reads the whole history: how it was). The ratio is
commands/s on the long history over commands/s on the short one: 1.0 means the
history costs nothing.
"""

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from bench import stack
from bench.scenario import BenchContext, Measurement, ScenarioResult
from kernel.application import open_application
from write_side.accounting.application import AccountingApplication
from write_side.accounting.domain import Account


class SnapshotsOnly(AccountingApplication):
    name = "accounting"  # the same tables
    env: ClassVar[dict[str, str]] = {}  # no aggregate cache


class NeitherSnapshotsNorCache(SnapshotsOnly):
    name = "accounting"  # (eventsourcing names a class without one after itself)
    snapshotting_intervals: ClassVar[dict[type, int]] = {}


CONFIGURATIONS: tuple[tuple[str, type[AccountingApplication]], ...] = (
    (
        "snapshots every 50 events and the aggregate cache (the service's settings)",
        AccountingApplication,
    ),
    ("snapshots only", SnapshotsOnly),
    ("neither (every load reads the whole history)", NeitherSnapshotsNorCache),
)
LONG = 10_000
SHORT = 10


def _account_with(app: AccountingApplication, events: int) -> str:
    """A new account whose history is ``events`` events (opened, then the card blocked
    and unblocked in turn), saved at once."""
    consumer_id = f"cust-{uuid.uuid4().hex[:8]}"
    account = Account(consumer_id=consumer_id, credit_limit_cents=10_000)
    for i in range(events - 1):
        if i % 2 == 0:
            account.block_card("bench")
        else:
            account.unblock_card()
    app.save(account)  # outside a command: one plain save, snapshots taken on the way
    return consumer_id


def _commands_per_second(app: AccountingApplication, consumer_id: str, count: int) -> float:
    blocked = app.get_account(consumer_id).card_blocked
    started = time.perf_counter()
    for _ in range(count):
        if blocked:
            app.unblock_card(consumer_id)
        else:
            app.block_card(consumer_id, "bench")
        blocked = not blocked
    return count / (time.perf_counter() - started)


@contextmanager
def _stores(context: BenchContext) -> Iterator[list[tuple[str, str, str | None]]]:
    stores: list[tuple[str, str, str | None]] = [
        ("SQLite", f"sqlite:///{context.work_dir}/accounting.db", None)
    ]
    if stack.postgres_available(context.postgres_url):
        with stack.postgres_schema(context.postgres_url) as schema:
            yield [*stores, ("PostgreSQL", context.postgres_url, schema)]
    else:
        yield stores


def run(context: BenchContext) -> ScenarioResult:
    result = ScenarioResult("History: a command on a long-lived aggregate")
    with _stores(context) as stores:
        for store_name, url, schema in stores:
            for label, app_class in CONFIGURATIONS:
                writer = open_application(AccountingApplication, url, schema)
                try:  # new accounts each time: the commands measured add to them
                    short = _account_with(writer, SHORT)
                    long = _account_with(writer, LONG)
                finally:
                    writer.close()
                slow = app_class is NeitherSnapshotsNorCache
                count = (10 if slow else 300) if context.quick else (20 if slow else 2000)
                app = open_application(app_class, url, schema)
                try:
                    on_short = _commands_per_second(app, short, count)
                    on_long = _commands_per_second(app, long, count)
                finally:
                    app.close()
                result.measurements.append(
                    Measurement(
                        what=f"{store_name}, {label}: commands/s on an account with "
                        f"{LONG:,} events ({count} commands, one at a time)",
                        value=on_long,
                        unit="commands/s",
                        baseline_name=f"the same on an account with {SHORT} events",
                        baseline=on_short,
                    )
                )
    result.notes.append(
        "Each command loads the account (get → mutate → save) and commits alone; each "
        "configuration gets new accounts, whose histories grow by the commands measured."
    )
    return result
