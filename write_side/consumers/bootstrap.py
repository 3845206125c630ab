"""Composition of the consumers service's pieces, shared by its processes."""

from kernel.application import open_application
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.settings import ConsumersSettings


def build_application(settings: ConsumersSettings | None = None) -> ConsumersApplication:
    settings = settings or ConsumersSettings()
    return open_application(
        ConsumersApplication, settings.consumers_database_url, settings.consumers_database_schema
    )
