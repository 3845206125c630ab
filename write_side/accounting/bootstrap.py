"""Composition of the accounting service's pieces, shared by its processes."""

from kernel.application import open_application
from write_side.accounting.application import AccountingApplication
from write_side.accounting.settings import AccountingSettings


def build_application(settings: AccountingSettings | None = None) -> AccountingApplication:
    settings = settings or AccountingSettings()
    return open_application(
        AccountingApplication,
        settings.accounting_database_url,
        settings.accounting_database_schema,
    )
