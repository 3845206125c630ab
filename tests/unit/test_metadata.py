"""Correlation and causation ids stored beside each event, out of the domain's sight."""

import pytest
from eventsourcing.persistence import Mapper

from kernel.metadata import MessageMetadata, caused_by, current_metadata
from kernel.store import MetadataMapper, event_store_env
from tests.kernel_example.application import TalliesApplication
from tests.kernel_example.domain import Tally


@pytest.fixture
def app(tmp_path):
    application = TalliesApplication(env=event_store_env(f"sqlite:///{tmp_path}/t.db"))
    yield application
    application.close()


def stored_metadata(app: TalliesApplication) -> list[MessageMetadata | None]:
    return [app.mapper.metadata_of(n) for n in app.recorder.select_notifications(1, 10)]


def test_the_store_env_installs_the_metadata_mapper(app):
    assert isinstance(app.mapper, MetadataMapper)


def test_events_saved_inside_caused_by_carry_its_ids(app):
    with caused_by(MessageMetadata(correlation_id="checkout-1", causation_id="command-1")):
        app.start_tally("t-1")
    with caused_by(MessageMetadata(correlation_id="checkout-1", causation_id="command-2")):
        app.close_tally("t-1", "changed my mind")

    assert stored_metadata(app) == [
        MessageMetadata(correlation_id="checkout-1", causation_id="command-1"),
        MessageMetadata(correlation_id="checkout-1", causation_id="command-2"),
    ]


def test_caused_by_only_lasts_for_its_block():
    metadata = MessageMetadata.new()

    with caused_by(metadata):
        assert current_metadata() == metadata

    assert current_metadata() is None


def test_an_event_saved_outside_caused_by_is_its_own_new_correlation(app):
    app.start_tally("t-1")
    app.close_tally("t-1", "changed my mind")

    started, closed = stored_metadata(app)
    assert started.correlation_id == started.causation_id
    assert closed.correlation_id == closed.causation_id
    assert started.correlation_id != closed.correlation_id


def test_decoded_domain_events_do_not_see_the_metadata(app):
    with caused_by(MessageMetadata(correlation_id="checkout-1", causation_id="command-1")):
        app.start_tally("t-1")
        app.close_tally("t-1", "changed my mind")

    notifications = app.recorder.select_notifications(1, 10)
    domain_events = [app.mapper.to_domain_event(n) for n in notifications]

    assert all(b"checkout-1" in n.state for n in notifications)  # stored...
    assert [type(e) for e in domain_events] == [Tally.Started, Tally.Closed]
    for domain_event in domain_events:  # ...but not decoded
        assert "__metadata__" not in vars(domain_event)
        assert "checkout-1" not in repr(vars(domain_event))

    tally = app.get_tally("t-1")
    assert (tally.closed_because, tally.version) == ("changed my mind", 2)
    assert not hasattr(tally, "__metadata__")


def test_an_event_stored_without_metadata_still_reads(app):
    """Events written before the metadata mapper (or by a plain mapper) have none."""
    [started] = Tally("t-1").collect_events()
    stored = Mapper(app.construct_transcoder()).to_stored_event(started)

    assert app.mapper.metadata_of(stored) is None
    assert vars(app.mapper.to_domain_event(stored)) == vars(started)


def test_the_store_env_gives_postgresql_the_psycopg_driver_and_a_schema():
    env = event_store_env("postgresql://u:secret@db:5432/orders", schema="tenant_1")

    assert env["SQLALCHEMY_URL"] == "postgresql+psycopg://u:secret@db:5432/orders"
    assert env["SQLALCHEMY_SCHEMA"] == "tenant_1"
    assert env["MAPPER_TOPIC"] == "kernel.store:MetadataMapper"


def test_the_store_env_refuses_other_databases():
    with pytest.raises(ValueError, match="unsupported event store URL"):
        event_store_env("mysql://u@db/orders")


def test_the_actor_is_stored_with_the_event_and_old_events_have_none(app):
    actor = MessageMetadata("checkout-1", "command-1", actor="cust-1", actor_roles=("customer",))
    with caused_by(actor):
        app.start_tally("with-actor")
    with caused_by(MessageMetadata(correlation_id="checkout-1", causation_id="command-2")):
        app.start_tally("without")

    assert stored_metadata(app) == [actor, MessageMetadata("checkout-1", "command-2")]
    assert MessageMetadata("c", "d").stored() == {"correlation_id": "c", "causation_id": "d"}
    old = {"correlation_id": "c", "causation_id": "d"}  # stored before actors were recorded
    assert MessageMetadata.from_stored(old) == MessageMetadata("c", "d")
