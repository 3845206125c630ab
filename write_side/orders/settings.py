from kernel.settings import RelaySettings

API_PORT = 8000
"""Its command API's port, locally and in docker-compose.yml (devstack/services.py)."""
COMPOSE_ENVIRONMENT = {
    # The transition period of orders.OrderCreated v2 (contracts/README.md): v1 as well.
    "ORDERS_RELAY_ALSO_PUBLISH": '["orders.OrderCreated.v1"]',
}
"""Settings docker-compose.yml gives its processes besides its store's (cqrs generate)."""


class OrdersSettings(RelaySettings):
    """Environment: ORDERS_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, RELAY_BATCH_SIZE, ..."""

    orders_database_url: str = "sqlite:///var/orders.db"
    orders_database_schema: str | None = None
    orders_relay_also_publish: frozenset[str] = frozenset({"orders.OrderCreated.v1"})
    """Older majors the relay still publishes beside the current one (a JSON list):
    the transition period of contracts/README.md. ``[]`` once every consumer reads v2."""
