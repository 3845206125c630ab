from kernel.settings import RelaySettings


class AccountingSettings(RelaySettings):
    """Environment: ACCOUNTING_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    accounting_database_url: str = "sqlite:///var/accounting.db"
    accounting_database_schema: str | None = None
