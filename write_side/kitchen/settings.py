from kernel.settings import RelaySettings

API_PORT = 8003
"""Its command API's port, locally and in docker-compose.yml (devstack/services.py)."""


class KitchenSettings(RelaySettings):
    """Environment: KITCHEN_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    kitchen_database_url: str = "sqlite:///var/kitchen.db"
    kitchen_database_schema: str | None = None
