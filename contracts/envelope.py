import hashlib
import json
import re
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION = "1.0"
TYPE_PATTERN = r"^[a-z_]+\.[A-Za-z]+\.v[0-9]+$"
# Deterministic ids: a re-published event keeps its id, so consumers can spot it.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c1f0e-6a55-4c3e-9a55-0f0e2f8a7a10")
_NAMESPACE_BYTES = _EVENT_ID_NAMESPACE.bytes

Headers = list[tuple[str, bytes]]


def event_id_for(source: str, aggregate_id: str, aggregate_version: int) -> str:
    """``str(uuid.uuid5(namespace, "source/aggregate/version"))``, written out: the
    relay makes one per event, and the UUID object cost as much as the hash."""
    name = f"{source}/{aggregate_id}/{aggregate_version}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Envelope(BaseModel):
    """One message on a topic, shaped after CloudEvents 1.0 (structured mode).

    ``subject`` is the aggregate id (also the Kafka key), ``sequence`` the event's
    position in the producing service's log and ``aggregateversion`` its version in
    the aggregate's own stream.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: str = SPEC_VERSION
    id: str
    type: str = Field(pattern=TYPE_PATTERN)
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


_json_string = json.encoder.encode_basestring
"""A str as a JSON string literal, other than ASCII kept as it is (as pydantic writes)."""
_valid_types: set[str] = set()


def encode_envelope(
    *,
    id: str,
    type: str,
    source: str,
    subject: str,
    time: datetime,
    correlationid: str,
    causationid: str,
    sequence: int,
    aggregateversion: int,
    data_json: bytes,
) -> tuple[bytes, Headers]:
    """``Envelope(...).to_bytes()`` and ``.kafka_headers()`` with ``data`` already JSON
    (a contract event's ``model_dump_json()``), byte for byte, without building the
    model: the relay's per-event cost. The model's checks are kept (the type's pattern,
    sequence and version at least 1); ``data_json`` is trusted to be a JSON object.
    """
    if type not in _valid_types:
        if not re.match(TYPE_PATTERN, type):
            raise ValueError(f"not an event type: {type!r}")
        _valid_types.add(type)
    if sequence < 1 or aggregateversion < 1:
        raise ValueError(f"sequence {sequence} and aggregate version {aggregateversion}: >= 1")
    time_text = time.isoformat()
    json_time = time_text[:-6] + "Z" if time_text.endswith("+00:00") else time_text
    id_json, subject_json = _json_string(id), _json_string(subject)
    correlation_json, causation_json = _json_string(correlationid), _json_string(causationid)
    value = (
        (
            f'{{"specversion":"{SPEC_VERSION}","id":{id_json},"type":"{type}",'
            f'"source":{_json_string(source)},"subject":{subject_json},"time":"{json_time}",'
            f'"datacontenttype":"application/json","correlationid":{correlation_json},'
            f'"causationid":{causation_json},"sequence":{sequence},'
            f'"aggregateversion":{aggregateversion},"data":'
        ).encode()
        + data_json
        + b"}"
    )
    headers = [
        ("ce_specversion", _SPEC_VERSION_BYTES),
        ("ce_id", id.encode()),
        ("ce_type", type.encode()),
        ("ce_source", source.encode()),
        ("ce_subject", subject.encode()),
        ("ce_time", time_text.encode()),
        ("ce_correlationid", correlationid.encode()),
        ("ce_causationid", causationid.encode()),
        ("content-type", _CONTENT_TYPE_BYTES),
    ]
    return value, headers


_SPEC_VERSION_BYTES = SPEC_VERSION.encode()
_CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()
