"""Composition of the accounting service's pieces, shared by its processes."""

from write_side.accounting.application import AccountingApplication
from write_side.accounting.settings import AccountingSettings
from write_side.kernel.application import open_application


def build_application(settings: AccountingSettings) -> AccountingApplication:
    return open_application(
        AccountingApplication,
        settings.accounting_database_url,
        settings.accounting_database_schema,
    )
