"""Composition of the kitchen service's pieces, shared by its processes."""

from kernel.application import open_application
from write_side.kitchen.application import KitchenApplication
from write_side.kitchen.settings import KitchenSettings


def build_application(settings: KitchenSettings | None = None) -> KitchenApplication:
    settings = settings or KitchenSettings()
    return open_application(
        KitchenApplication, settings.kitchen_database_url, settings.kitchen_database_schema
    )
