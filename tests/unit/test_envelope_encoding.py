"""The relay writes envelopes without building the model (``encode_envelope``): the same
bytes and headers as ``Envelope(...).to_bytes()`` and ``.kafka_headers()``, the same
checks; event ids as ``uuid5``; no downcast for a major nobody publishes."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from contracts import registry
from contracts.base import Conversion
from contracts.envelope import _EVENT_ID_NAMESPACE, Envelope, encode_envelope, event_id_for
from tests.kernel_example import contracts as tallies

FIELDS = {
    "id": "6f1c1f0e-6a55-4c3e-9a55-0f0e2f8a7a10",
    "type": "tallies.TallyStarted.v2",
    "source": "tallies",
    "subject": "d1e3c0a4-0000-4000-8000-000000000001",
    "time": datetime(2026, 12, 3, 14, 27, 36, 98000, tzinfo=UTC),
    "correlationid": "corr-1",
    "causationid": "cause-1",
    "sequence": 7,
    "aggregateversion": 2,
}
DATA = {"tally_id": "t-1", "tally_name": 'pommes "frites" \\ à l\'ancienne\n', "unit": "€"}


def encoded_and_model(data: dict[str, object], **changes: object) -> tuple[object, object]:
    fields = {**FIELDS, **changes}
    envelope = Envelope(**fields, data=data)  # type: ignore[arg-type]
    model = tallies.TallyStarted(**data)  # type: ignore[arg-type]
    data_json = model.__pydantic_serializer__.to_json(model)
    encoded = encode_envelope(**fields, data_json=data_json)  # type: ignore[arg-type]
    return encoded, (envelope.to_bytes(), envelope.kafka_headers())


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"time": datetime(2026, 1, 1, tzinfo=UTC)},  # no fraction of a second
        {"time": datetime(2026, 1, 1, 1, 2, 3, 5, tzinfo=timezone(timedelta(hours=2)))},
        {"subject": 'a "quoted"\\ subject\twith\x01control é', "correlationid": "ü\n"},
        {"source": "tallies/eu", "causationid": "x" * 300, "sequence": 10**12},
    ],
    ids=["utc", "whole-second", "offset", "escapes", "long"],
)
def test_an_encoded_envelope_is_the_models_bytes_and_headers(changes):
    encoded, expected = encoded_and_model(DATA, **changes)
    assert encoded == expected
    value, _ = encoded
    assert Envelope.from_bytes(value) == Envelope(**{**FIELDS, **changes}, data=DATA)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [{"type": "Tallies.started"}, {"sequence": 0}, {"aggregateversion": 0}],
    ids=["type", "sequence", "version"],
)
def test_encoding_refuses_what_the_model_refuses(changes):
    with pytest.raises(ValidationError):
        Envelope(**{**FIELDS, **changes}, data=DATA)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_envelope(**{**FIELDS, **changes}, data_json=b"{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("aggregate_id", ["t-1", "é/ü", "0b6c5f0e-6a8f-4b5e-9a53-2d1c3f9e8a71"])
@pytest.mark.parametrize("version", [1, 12, 10**9])
def test_event_ids_are_uuid5_of_source_aggregate_and_version(aggregate_id, version):
    expected = uuid.uuid5(_EVENT_ID_NAMESPACE, f"orders/{aggregate_id}/{version}")
    assert event_id_for("orders", aggregate_id, version) == str(expected)


def test_no_downcast_runs_for_a_major_nobody_publishes(monkeypatch):
    def refuse(event: object) -> tallies.TallyStartedV1:
        raise AssertionError("downcast although no older major is published")

    refusing = Conversion(tallies.TallyStarted, tallies.TallyStartedV1, refuse)
    monkeypatch.setattr(registry, "_DOWNCASTERS", {tallies.TallyStarted: refusing})
    started = tallies.TallyStarted(tally_id="t-1", tally_name="t", unit="items")
    assert registry.editions(started, frozenset()) == [started]
    assert registry.editions(started, {"tallies.TallyAdded.v0"}) == [started]
    with pytest.raises(AssertionError, match="downcast although"):
        registry.editions(started, {"tallies.TallyStarted.v1"})
