"""Configuration of the query API, read from the environment (pydantic-settings)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class QuerySettings(BaseSettings):
    """Environment: MONGODB_URL, MONGODB_DATABASE, MONGODB_TIMEOUT, READ_YOUR_WRITES_TIMEOUT,
    KAFKA_BOOTSTRAP_SERVERS (the projections' lag in ``GET /projections``)."""

    model_config = SettingsConfigDict(extra="ignore")

    mongodb_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongodb_database: str = "read_models"
    mongodb_timeout: float = Field(default=5.0, gt=0)
    """Seconds one MongoDB operation may take, finding the server included (PyMongo's
    ``timeoutMS``); past it the request is a ``503``. Without it a request waits 30 s for
    a server that is down (PyMongo's server selection)."""
    # Seconds a query carrying a consistency token may wait for the read model to
    # reach it before answering 503.
    read_your_writes_timeout: float = Field(default=5.0, ge=0)
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
