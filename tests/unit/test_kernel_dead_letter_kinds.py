"""Dead letters without a broker, on the kernel's own tallies contracts: reason kinds,
ids, and what a re-publish sends."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from contracts.envelope import Envelope
from contracts.registry import ContractError, decode_envelope, parse_data
from kernel.dead_letters import (
    PROVENANCE_HEADER,
    DeadLetter,
    DeadLetterError,
    Filter,
    Republication,
    parse_id,
    plan,
    safe_text,
)
from kernel.messaging import REASON_KINDS, Reason
from tests.kernel_example.contracts import TallyStarted, registered

TALLY_ID = "0b8a3c52-6f0e-4c6e-9d65-7d1c8f3b2a10"
STARTED = Envelope(
    id="e",
    type="tallies.TallyStarted.v2",
    source="tallies",
    subject=TALLY_ID,
    time=datetime(2026, 1, 1, tzinfo=UTC),
    correlationid="c",
    causationid="c",
    sequence=1,
    aggregateversion=1,
    data={"tally_id": TALLY_ID, "tally_name": "apples", "unit": "items"},
)


@pytest.fixture(autouse=True)
def tally_contracts() -> Iterator[None]:
    with registered():
        yield


def reason_of(envelope: Envelope | bytes | None, accepts: tuple = (TallyStarted,)) -> Reason:
    """The reason a consumer of ``accepts`` gives for these bytes (as the runtimes do)."""
    raw = envelope.to_bytes() if isinstance(envelope, Envelope) else envelope
    with pytest.raises(ContractError) as refused:
        parse_data(decode_envelope(raw), accepts)
    return Reason.of(refused.value)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (None, "malformed"),
        (b"\x00garbage", "malformed"),
        (b'{"specversion": "1.0"}', "malformed"),
        (STARTED.model_copy(update={"type": "tallies.TallyShipped.v1"}), "unknown-type"),
        (STARTED.model_copy(update={"type": "tallies.TallyStarted.v99"}), "unsupported-version"),
        (STARTED.model_copy(update={"type": "tallies.TallyAdded.v1"}), "unsupported-type"),
        (STARTED.model_copy(update={"data": {"tally_id": TALLY_ID}}), "schema-violation"),
    ],
)
def test_each_refusal_of_the_contracts_has_its_kind(message: object, kind: str) -> None:
    assert parse_data(STARTED, (TallyStarted,)), "only the change makes it poison"
    reason = reason_of(message)
    assert reason.kind == kind and kind in REASON_KINDS
    assert isinstance(reason, str) and reason  # the dlq_reason text


def test_a_dead_letter_without_a_kind_header_counts_as_other() -> None:
    dead = letter((("dlq_reason", b"the disk is on fire"),))
    assert (dead.kind, dead.reason) == ("other", "the disk is on fire")


def test_a_dead_letter_id_names_topic_partition_and_offset() -> None:
    assert parse_id("tallies.dead-letters:0:12") == ("tallies.dead-letters", 0, 12)
    assert parse_id("a.b:c.dead-letters:3:4") == ("a.b:c.dead-letters", 3, 4)
    for bad in ("tallies:0:12", "tallies.dead-letters:0", "tallies.dead-letters:x:1", "12"):
        with pytest.raises(DeadLetterError, match="not a dead letter id"):
            parse_id(bad)


def letter(headers: tuple[tuple[str, bytes], ...]) -> DeadLetter:
    return DeadLetter("tallies.dead-letters", 0, 7, b"t-1", b"bytes", headers)


def test_republishing_sends_the_original_back_with_its_provenance() -> None:
    dead = letter(
        (
            ("ce_type", b"tallies.TallyStarted.v2"),
            (PROVENANCE_HEADER, b"tallies.dead-letters:0:2"),  # it was re-published once
            ("dlq_reason", b"not a valid envelope: x"),
            ("dlq_reason_kind", b"malformed"),
            ("dlq_consumer", b"projections.tallies"),
            ("dlq_topic", b"tallies"),
            ("dlq_partition", b"3"),
            ("dlq_offset", b"41"),
        )
    )
    planned = plan(dead)
    assert (planned.topic, planned.partition, planned.key, planned.value) == (
        "tallies",
        3,
        b"t-1",
        b"bytes",
    )
    assert planned.headers == (
        ("ce_type", b"tallies.TallyStarted.v2"),
        (PROVENANCE_HEADER, b"tallies.dead-letters:0:7"),
    )
    assert (dead.origin, dead.consumer, dead.kind) == (
        "tallies[3]@41",
        "projections.tallies",
        "malformed",
    )


def test_a_record_without_the_dead_letter_headers_is_not_republished() -> None:
    with pytest.raises(DeadLetterError, match="not a dead letter"):
        plan(letter((("ce_type", b"x"),)))


def test_bytes_are_shown_without_control_characters() -> None:
    assert safe_text(b"projections.tallies") == "projections.tallies"
    assert safe_text(b"\x00garbage\x1b[2J") == r"b'\x00garbage\x1b[2J'"
    assert safe_text(b"\xff\xfe") == r"b'\xff\xfe'"


def test_the_topic_filter_takes_the_original_or_the_dead_letter_topic() -> None:
    existing = [
        "tallies",
        "tallies.dead-letters",
        "other.dead-letters",
        "x.dead-letters.republished",
    ]
    assert Filter().topics(existing) == ["other.dead-letters", "tallies.dead-letters"]
    assert Filter(topic="tallies").topics(existing) == ["tallies.dead-letters"]
    assert Filter(topic="tallies.dead-letters").topics(existing) == ["tallies.dead-letters"]
    assert Filter(topic="nope").topics(existing) == []


def test_a_republication_record_reads_back_and_ignores_fields_added_later() -> None:
    record = Republication("tallies.dead-letters:0:7", "tallies[3]@41", "tallies[3]@90", "t", "ann")
    assert Republication.from_bytes(record.to_bytes()) == record
    newer = json.dumps({**json.loads(record.to_bytes()), "ticket": "OPS-12"}).encode()
    assert Republication.from_bytes(newer) == record
    with pytest.raises(KeyError):
        Republication.from_bytes(b'{"dead_letter": "x"}')
