"""Composition of the consumers service's pieces, shared by its processes."""

from write_side.consumers.application import ConsumersApplication
from write_side.consumers.settings import ConsumersSettings
from write_side.kernel.application import open_application


def build_application(settings: ConsumersSettings) -> ConsumersApplication:
    return open_application(
        ConsumersApplication, settings.consumers_database_url, settings.consumers_database_schema
    )
