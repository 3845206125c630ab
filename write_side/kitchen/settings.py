from kernel.settings import RelaySettings


class KitchenSettings(RelaySettings):
    """Environment: KITCHEN_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    kitchen_database_url: str = "sqlite:///var/kitchen.db"
    kitchen_database_schema: str | None = None
