"""Pure pieces of rebuilding and of the projections' status, on the kernel's own tallies
read model: build names carry the version, lag arithmetic, the shadow report, the
staleness headers. No server."""

from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition

from kernel.projection_catalog import build_collection_name
from kernel.projections_status import lag_of
from kernel.read_models import Staleness
from kernel.replay import ShadowReport
from tests.kernel_example.projection import TALLIES


def test_a_build_is_named_after_its_projection_and_version():
    name = build_collection_name(TALLIES, datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))
    assert name.startswith(f"tallies_v{TALLIES.version}_20260304T050607_")
    assert name != build_collection_name(TALLIES, datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))


def test_lag_in_events_and_in_seconds():
    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    entries = [
        {"topic": "tallies", "partition": 0, "offset": 9, "event_time": now - timedelta(seconds=4)},
        {"topic": "tallies", "partition": 1, "offset": 4, "event_time": now - timedelta(seconds=1)},
    ]
    ends = {TopicPartition("tallies", 0): 10, TopicPartition("tallies", 1): 8}

    lag = lag_of(entries, ends, now)

    assert lag["lag_events"] == 3  # partition 1: offsets 5, 6, 7 not applied
    assert lag["lag_seconds"] == 1.0  # the last event applied there is 1 s old
    assert [p["lag"] for p in lag["partitions"]] == [0, 3]
    caught_up = lag_of(entries, {**ends, TopicPartition("tallies", 1): 5}, now)
    assert (caught_up["lag_events"], caught_up["lag_seconds"]) == (0, 0.0)
    assert lag_of(entries, {}, now)["lag_events"] is None  # no broker: unknown


def test_a_shadow_report_names_its_differences():
    assert ShadowReport(compared=3).describe() == "3 documents, all equal"
    report = ShadowReport(compared=4, only_live=["a"], different=["b", "c"])
    assert not report.equal
    assert report.describe() == (
        "4 documents compared: 1 only in the live collection (e.g. a); 2 different (e.g. b, c)"
    )


def test_staleness_headers_say_how_far_the_read_model_has_got_and_how_old_it_is():
    applied = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    headers = Staleness(41, applied).headers(applied + timedelta(seconds=2.5))
    assert headers == {
        "X-Read-Model-Position": "41",
        "X-Read-Model-Event-Time": applied.isoformat(),
        "X-Read-Model-Age": "2.500",
    }
    # The reader's clock a little behind the writer's: the age is zero, never negative.
    behind = Staleness(41, applied).headers(applied - timedelta(seconds=1))
    assert behind["X-Read-Model-Age"] == "0.000"
    assert Staleness(0, None).headers(applied) == {"X-Read-Model-Position": "0"}
