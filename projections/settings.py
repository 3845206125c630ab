"""Configuration of the projections worker, read from the environment."""

from kernel.settings import KafkaSettings


class ProjectionSettings(KafkaSettings):
    """Environment: KAFKA_BOOTSTRAP_SERVERS, MONGODB_URL, MONGODB_DATABASE, PROJECTION_BATCH_*."""

    mongodb_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongodb_database: str = "read_models"
    projection_batch_size: int = 500
    projections_group_id: str = "projections"
    projections_data_dir: str = "var/faust"
