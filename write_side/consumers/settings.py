from kernel.settings import RelaySettings


class ConsumersSettings(RelaySettings):
    """Environment: CONSUMERS_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    consumers_database_url: str = "sqlite:///var/consumers.db"
    consumers_database_schema: str | None = None
