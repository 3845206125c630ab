"""Transient failures are retried, never dropped; anything else is not swallowed."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import OperationalError

from contracts.envelope import Envelope, event_id_for
from kernel.messaging import ConsumedMessage
from kernel.reactions import Reaction, Reactor
from kernel.streams import retry_until_done
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.contracts import TallyClosed
from tests.kernel_example.contracts import registered as tally_contracts


@pytest.fixture
def registered() -> Iterator[type[TallyClosed]]:
    """The tallies' contracts, known to the registry only while the test runs."""
    with tally_contracts():
        yield TallyClosed


async def test_retry_until_done_retries_transient_errors_until_the_work_succeeds():
    attempts = []

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("connection refused")

    await asyncio.wait_for(retry_until_done(flaky, "test"), timeout=10)
    assert len(attempts) == 3


async def test_retry_until_done_lets_a_bug_through():
    async def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await retry_until_done(broken, "test")


def test_a_reaction_failing_for_a_transient_reason_records_nothing_and_propagates(registered):
    app = TalliesApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    calls = []

    def database_away(app: object, event: object, envelope: Envelope) -> None:
        calls.append(1)
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    reactor = Reactor(app, "test-saga", [Reaction(registered, database_away)])
    tally_id = str(uuid.uuid4())
    envelope = Envelope(
        id=event_id_for("tallies", tally_id, 2),
        type=registered.type(),
        source="tallies",
        subject=tally_id,
        time=datetime.now(UTC),
        correlationid="c",
        causationid="c",
        sequence=2,
        aggregateversion=2,
        data={"tally_id": tally_id, "reason": "counted"},
    )
    message = ConsumedMessage("tallies", 0, 5, None, envelope.to_bytes())

    with pytest.raises(OperationalError):
        reactor.react(message)

    assert calls == [1]
    assert not app.has_processed(reactor.tracking(message)), "retried later, not recorded"
