"""The four services' event stores, opened from the chaos process with the round's settings:
what their logs hold, how far each relay has recorded, and each aggregate's history."""

from __future__ import annotations

import contextlib
import importlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from kernel.application import ServiceApplication

READ_BATCH = 1000


def open_store(service: str, env: dict[str, str]) -> ServiceApplication:
    """The service's Application on its store, as its own processes open it
    (`write_side/<service>/bootstrap.py` with `<Service>Settings`)."""
    bootstrap = importlib.import_module(f"write_side.{service}.bootstrap")
    settings_module = importlib.import_module(f"write_side.{service}.settings")
    settings_class = getattr(settings_module, f"{service.capitalize()}Settings")
    own = {k.lower(): v for k, v in env.items() if k.startswith(f"{service.upper()}_")}
    settings = settings_class(kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], **own)
    app: ServiceApplication = bootstrap.build_application(settings)
    return app


@contextlib.contextmanager
def opened_stores(services: tuple[str, ...], env: dict[str, str]) -> Iterator[Stores]:
    apps = {}
    try:
        for service in services:
            apps[service] = open_store(service, env)
        yield Stores(apps)
    finally:
        for app in apps.values():
            app.close()


@dataclass
class Stores:
    apps: dict[str, ServiceApplication]

    def head(self, service: str) -> int:
        """The last notification id of the service's log."""
        return self.apps[service].recorder.max_notification_id() or 0

    def relay_position(self, service: str) -> int:
        """The position the service's relay recorded (`Relay.position`): every event up
        to it was acknowledged by the broker."""
        app = self.apps[service]
        return app.recorder.max_tracking_id(f"relay:{service}") or 0

    def notifications(self, service: str) -> list[Notification]:
        """Every notification of the service's log, in order."""
        recorder = self.apps[service].recorder
        found: list[Notification] = []
        while batch := recorder.select_notifications(found[-1].id + 1 if found else 1, READ_BATCH):
            found += batch
        return found

    def events(self, service: str) -> list[Any]:
        """Every domain event of the service's log, in notification order."""
        mapper = self.apps[service].mapper
        return [mapper.to_domain_event(n) for n in self.notifications(service)]

    def histories(self, service: str) -> dict[UUID, list[Any]]:
        """Each aggregate's events, by aggregate id."""
        by_id: dict[UUID, list[Any]] = defaultdict(list)
        for event in self.events(service):
            by_id[event.originator_id].append(event)
        return dict(by_id)


def event_name(event: Any) -> str:
    """`Order.Placed`, `Ticket.Approved`, ...: the aggregate's class and the event's."""
    return str(type(event).__qualname__)
