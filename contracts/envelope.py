import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION = "1.0"
# Deterministic ids: a re-published event keeps its id, so consumers can spot it.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c1f0e-6a55-4c3e-9a55-0f0e2f8a7a10")


def event_id_for(source: str, aggregate_id: str, aggregate_version: int) -> str:
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{source}/{aggregate_id}/{aggregate_version}"))


class Envelope(BaseModel):
    """One message on a topic, shaped after CloudEvents 1.0 (structured mode).

    ``subject`` is the aggregate id (also the Kafka key), ``sequence`` the event's
    position in the producing service's log and ``aggregateversion`` its version in
    the aggregate's own stream.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: str = SPEC_VERSION
    id: str
    type: str = Field(pattern=r"^[a-z_]+\.[A-Za-z]+\.v[0-9]+$")
    source: str
    subject: str
    time: datetime
    datacontenttype: str = "application/json"
    correlationid: str
    causationid: str
    sequence: int = Field(ge=1)
    aggregateversion: int = Field(ge=1)
    data: dict[str, Any]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """CloudEvents Kafka-binding headers, so tools can route without parsing."""
        return [
            ("ce_specversion", self.specversion.encode()),
            ("ce_id", self.id.encode()),
            ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()),
            ("ce_subject", self.subject.encode()),
            ("ce_time", self.time.isoformat().encode()),
            ("ce_correlationid", self.correlationid.encode()),
            ("ce_causationid", self.causationid.encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Envelope":
        return cls.model_validate(json.loads(raw))
