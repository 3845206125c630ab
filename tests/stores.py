"""The event stores tests run on."""

from dataclasses import dataclass

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Store:
    """One test's event stores: a SQLite file per service, or a fresh PostgreSQL schema
    shared by the services (their tables are prefixed by service name)."""

    url_template: str  # "{service}" is replaced by the service's name
    schema: str | None = None

    def url(self, service: str = "orders") -> str:
        return self.url_template.format(service=service)

    def env(self, *services: str) -> dict[str, str]:
        """The environment that points the services at this store."""
        env = {}
        for service in services or ("orders",):
            env[f"{service.upper()}_DATABASE_URL"] = self.url(service)
            if self.schema:
                env[f"{service.upper()}_DATABASE_SCHEMA"] = self.schema
        return env
