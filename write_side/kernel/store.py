"""Event store configuration: eventsourcing + SQLAlchemy on SQLite or PostgreSQL."""

from typing import Any

from eventsourcing.persistence import Cipher, Compressor, Mapper, StoredEvent, Transcoder
from sqlalchemy.engine import make_url

from write_side.kernel.metadata import MessageMetadata, current_metadata

_METADATA_KEY = "__metadata__"


def event_store_env(database_url: str, schema: str | None = None) -> dict[str, str]:
    """The eventsourcing environment for one service's store.

    ``sqlite:///path`` (the default) or ``postgresql+psycopg://...``; a bare
    ``postgresql://`` URL is given the psycopg (v3) driver.
    """
    url = make_url(database_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported event store URL (use sqlite or postgresql): {url!r}")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
        "SQLALCHEMY_URL": url.render_as_string(hide_password=False),
        "MAPPER_TOPIC": "write_side.kernel.store:MetadataMapper",
    }
    if schema:
        env["SQLALCHEMY_SCHEMA"] = schema
    return env


class _MetadataTranscoder(Transcoder):
    """Adds the current command's metadata to each encoded state; strips it on decode."""

    def __init__(self, inner: Transcoder):
        self.inner = inner

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, dict):
            metadata = current_metadata() or MessageMetadata.new()
            obj = {**obj, _METADATA_KEY: vars(metadata)}
        return self.inner.encode(obj)

    def decode(self, data: bytes) -> Any:
        obj = self.inner.decode(data)
        if isinstance(obj, dict):
            obj.pop(_METADATA_KEY, None)
        return obj


class MetadataMapper(Mapper[Any]):
    """Stores correlation/causation ids beside each event's state, out of the domain's sight."""

    def __init__(
        self,
        transcoder: Transcoder,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ):
        super().__init__(_MetadataTranscoder(transcoder), compressor, cipher)
        self._plain_transcoder = transcoder

    def metadata_of(self, stored_event: StoredEvent) -> MessageMetadata | None:
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        raw = self._plain_transcoder.decode(state).get(_METADATA_KEY)
        return MessageMetadata(**raw) if raw else None
