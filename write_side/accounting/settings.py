from kernel.settings import RelaySettings

API_PORT = 8004
"""Its command API's port, locally and in docker-compose.yml (devstack/services.py)."""


class AccountingSettings(RelaySettings):
    """Environment: ACCOUNTING_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    accounting_database_url: str = "sqlite:///var/accounting.db"
    accounting_database_schema: str | None = None
