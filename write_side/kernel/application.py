"""The base of every service's eventsourcing Application, and how it is opened."""

from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.persistence import ProcessRecorder, Recording, Tracking
from sqlalchemy.engine import make_url

from write_side.kernel.store import event_store_env


class ServiceApplication(Application[UUID]):
    """An Application whose saves can carry the position of a consumed message.

    Saga reactions save their new events together with a ``Tracking`` record (the
    inbox) in one transaction, through eventsourcing's process recorder; a message
    whose position is already tracked has been handled and is not handled again.
    """

    recorder: ProcessRecorder

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    def has_processed(self, tracking: Tracking) -> bool:
        return self.recorder.has_tracking_id(tracking.application_name, tracking.notification_id)

    def save_processed(self, tracking: Tracking, *aggregates: Any) -> list[Recording[UUID]]:
        """Save the aggregates' new events and the tracking record atomically.

        Raises eventsourcing's IntegrityError if the message was already tracked or an
        aggregate was changed concurrently.
        """
        processing_event: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
        processing_event.collect_events(*aggregates)
        # The same path eventsourcing's own ProcessApplication takes to record.
        return self._record(processing_event)

    def close(self) -> None:
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
    return app_class(env=event_store_env(database_url, schema))
