from kernel.settings import RelaySettings

API_PORT = 8002
"""Its command API's port, locally and in docker-compose.yml (devstack/services.py)."""


class ConsumersSettings(RelaySettings):
    """Environment: CONSUMERS_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    consumers_database_url: str = "sqlite:///var/consumers.db"
    consumers_database_schema: str | None = None
