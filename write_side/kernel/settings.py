"""Configuration from the environment; the same names in docker-compose and the local runner."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_partitions: int = 4


class RelaySettings(KafkaSettings):
    relay_batch_size: int = 500
    relay_poll_interval: float = 0.05
