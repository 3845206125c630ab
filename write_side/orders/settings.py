from write_side.kernel.settings import RelaySettings


class OrdersSettings(RelaySettings):
    """Environment: ORDERS_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    orders_database_url: str = "sqlite:///var/orders.db"
    orders_database_schema: str | None = None
