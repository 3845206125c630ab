"""The base of every service's eventsourcing Application, and how it is opened."""

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    ProjectorFunction,
    Repository,
    project_aggregate,
)
from eventsourcing.persistence import IntegrityError, ProcessRecorder, Recording, Tracking
from eventsourcing.utils import strtobool
from sqlalchemy.engine import make_url

from kernel import tracing
from kernel.errors import NotFound
from kernel.group_commit import BatchingRepository, GroupCommit
from kernel.store import event_store_env

log = logging.getLogger(__name__)

Aggregate = TypeVar("Aggregate")


class ServiceApplication(Application[UUID]):
    """A service's Application: commands share transactions; saves can carry a position.

    Methods marked ``@command`` (kernel.group_commit) run in turns of the
    service's group commit: concurrent commands are applied in arrival order and
    committed together, one transaction per batch.

    Saga reactions run through the same group commit (``run_in_order``): a batch of
    consumed messages is handled in one transaction, which also records the messages'
    positions (eventsourcing ``Tracking`` records: the inbox); a message whose position
    is already recorded has been handled and is not handled again.

    Automatic snapshots work as in eventsourcing: an aggregate whose new version is a
    multiple of its class's ``snapshotting_intervals`` entry is snapshotted once its
    events are stored, so loading it reads at most that many events.
    """

    recorder: ProcessRecorder
    # eventsourcing's aggregate cache: an aggregate loaded once is kept (the most
    # recently used, per process) and brought up to date with one query for its newer
    # events when it is read again ("fast-forward"), instead of being rebuilt from its
    # snapshot and events. Any process may write it meanwhile: the query sees that.
    # ``<NAME>_AGGREGATE_CACHE_MAXSIZE`` (or ``AGGREGATE_CACHE_MAXSIZE``) sets the size.
    env: ClassVar[dict[str, str]] = {"AGGREGATE_CACHE_MAXSIZE": "1000"}

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    def construct_repository(self) -> Repository[UUID]:
        # Called by Application.__init__ once the mapper, recorder and stores exist.
        self.group_commit = GroupCommit(
            self.mapper, self.recorder, on_committed=self._committed, name=self.name
        )
        cache_maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return BatchingRepository(  # the cache's settings read as Application's own are
            self.group_commit,
            event_store=self.events,
            snapshot_store=self.snapshots,
            cache_maxsize=int(cache_maxsize) if cache_maxsize else None,
            fastforward=strtobool(self.env.get(self.AGGREGATE_CACHE_FASTFORWARD, "y")),
            fastforward_skipping=strtobool(
                self.env.get(self.AGGREGATE_CACHE_FASTFORWARD_SKIPPING, "n")
            ),
            deepcopy_from_cache=strtobool(self.env.get(self.DEEPCOPY_FROM_AGGREGATE_CACHE, "y")),
        )

    def load(self, kind: type[Aggregate], aggregate_id: UUID, missing: str) -> Aggregate:
        """The ``kind`` aggregate of that id: a command's "get". ``NotFound(missing)`` if
        there is none, or if the id is an aggregate of another kind."""
        try:
            aggregate: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(missing) from None
        if not isinstance(aggregate, kind):
            raise NotFound(missing)
        return aggregate

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Inside a command's turn, stage the events in its batch; else save them now."""
        if kwargs:
            return super().save(*objs, **kwargs)
        return self.group_commit.save(objs, super().save)

    def take_snapshot(
        self,
        aggregate_id: UUID,
        version: int | None = None,
        projector_func: ProjectorFunction[Any, Any] = project_aggregate,
    ) -> None:
        """As eventsourcing's, but a snapshot of that version stored already is no error
        (another process, or a command run again, took it)."""
        with contextlib.suppress(IntegrityError):
            super().take_snapshot(aggregate_id, version, projector_func)

    def _committed(self, events: Sequence[Any], aggregates: dict[UUID, Any]) -> None:
        """After a batched command's events are stored: what ``Application.save`` does
        after storing. The aggregates go to the cache as they are now (a later read
        needs no event of its own), and the automatic snapshots are taken (a failure
        there only costs a later load more events)."""
        cache = self.repository.cache
        if cache is not None:
            for aggregate_id, aggregate in aggregates.items():
                cache.put(aggregate_id, aggregate)
        if not (self.snapshots and self.snapshotting_intervals):
            return
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        processing.events = list(events)
        processing.aggregates = aggregates
        try:
            self._take_snapshots(processing)
        except Exception:
            log.exception("%s: taking a snapshot failed; loading reads more events", self.name)

    def has_processed(self, tracking: Tracking) -> bool:
        return self.recorder.has_tracking_id(tracking.application_name, tracking.notification_id)

    def close(self) -> None:
        group_commit = getattr(self, "group_commit", None)
        if group_commit is not None:
            group_commit.close()
        super().close()
        engine = getattr(getattr(self.recorder, "datastore", None), "engine", None)
        if engine is not None:
            engine.dispose()  # eventsourcing-sqlalchemy leaves its pool open


App = TypeVar("App", bound=ServiceApplication)


def open_application(app_class: type[App], database_url: str, schema: str | None = None) -> App:
    """Open a service's Application on its own store (creating a SQLite file's folder)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    app = app_class(env=event_store_env(database_url, schema))
    tracing.instrument_engine(app.recorder.datastore.engine)  # type: ignore[attr-defined]
    return app
