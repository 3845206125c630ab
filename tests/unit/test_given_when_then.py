"""kernel.testing's given-when-then: it passes on the right outcome and fails, with a diff,
on a wrong event type, wrong data, a missing or an extra event, and a wrong or missing error.
"""

from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate, event

from kernel.errors import DomainError
from kernel.testing import fact, given


class Lamp(Aggregate):
    class Installed(Aggregate.Created):
        room: str

    class SwitchedOn(Aggregate.Event):
        by: str

    class SwitchedOff(Aggregate.Event):
        pass

    @event(Installed)
    def __init__(self, room: str) -> None:
        if not room:
            raise DomainError("a lamp needs a room")
        self.room = room
        self.on = False

    def switch_on(self, by: str) -> None:
        if self.on:
            raise DomainError(f"the lamp in {self.room} is already on")
        self._switched_on(by)

    def switch_off(self) -> None:
        if self.on:
            self._switched_off()

    def move(self, room: str) -> None:
        self.room = room  # a bug: state changed with no event

    @event(SwitchedOn)
    def _switched_on(self, by: str) -> None:
        self.on = True

    @event(SwitchedOff)
    def _switched_off(self) -> None:
        self.on = False


INSTALLED = fact(Lamp.Installed, room="hall")
ON = fact(Lamp.SwitchedOn, by="ann")


def switch_on(lamp: Lamp) -> None:
    lamp.switch_on("ann")


# It passes


def test_given_events_when_a_command_then_its_events_and_the_aggregate():
    lamp = given(INSTALLED).when(switch_on).then(ON)

    assert (lamp.on, lamp.version) == (True, 2)


def test_the_facts_get_the_stream_s_id_and_versions():
    lamp_id = uuid4()

    lamp = (
        given(INSTALLED, ON, originator_id=lamp_id)
        .when(Lamp.switch_off)
        .then(fact(Lamp.SwitchedOff, originator_id=lamp_id, originator_version=3))
    )

    assert (lamp.id, lamp.version, lamp.on) == (lamp_id, 3, False)


def test_the_stream_takes_the_id_the_first_fact_gives():
    lamp_id = uuid4()

    lamp = (
        given(fact(Lamp.Installed, room="hall", originator_id=lamp_id), ON)
        .when(Lamp.switch_off)
        .then(fact(Lamp.SwitchedOff))
    )

    assert (lamp.id, lamp.version) == (lamp_id, 3)


def test_a_creation_command_is_given_nothing_and_returns_the_aggregate():
    lamp = given().when(lambda _: Lamp("hall")).then(INSTALLED)

    assert lamp.room == "hall"


def test_real_events_can_be_given_and_expected():
    installed = Lamp("hall")
    [created] = installed.collect_events()
    installed.switch_on("ann")
    [switched_on] = installed.collect_events()

    lamp = given(created).when(switch_on).then(switched_on)

    assert lamp.id == installed.id


def test_a_command_that_records_nothing_then_no_events():
    lamp = given(INSTALLED).when(Lamp.switch_off).then()

    assert lamp.version == 1


def test_given_events_when_a_forbidden_command_then_the_error():
    lamp = (
        given(INSTALLED, ON)
        .when(switch_on)
        .then_error(DomainError, "the lamp in hall is already on")
    )

    assert lamp.version == 2


def test_a_failed_creation_then_the_error_and_no_aggregate():
    assert given().when(lambda _: Lamp("")).then_error(DomainError, "a lamp needs a room") is None


# It fails, saying why


def test_a_wrong_event_type_fails():
    with pytest.raises(AssertionError, match=r"(?s)-Lamp.SwitchedOff.*\+Lamp.SwitchedOn"):
        given(INSTALLED).when(switch_on).then(fact(Lamp.SwitchedOff))


def test_wrong_event_data_fails_with_a_diff_of_the_attribute():
    with pytest.raises(AssertionError, match=r"(?s)-    by='bob'\n\+    by='ann'"):
        given(INSTALLED).when(switch_on).then(fact(Lamp.SwitchedOn, by="bob"))


def test_a_wrong_originator_version_fails():
    with pytest.raises(AssertionError, match=r"-    originator_version=3"):
        given(INSTALLED).when(switch_on).then(fact(Lamp.SwitchedOn, by="ann", originator_version=3))


def test_a_missing_event_fails():
    with pytest.raises(AssertionError, match=r"(?s)recorded other events.*-Lamp.SwitchedOff"):
        given(INSTALLED).when(switch_on).then(ON, fact(Lamp.SwitchedOff))


def test_an_extra_event_fails():
    with pytest.raises(AssertionError, match=r"(?s)recorded other events.*\+Lamp.SwitchedOn"):
        given(INSTALLED).when(switch_on).then()


def test_an_error_where_events_were_expected_fails():
    with pytest.raises(AssertionError, match=r"raised DomainError\('the lamp in hall is alre"):
        given(INSTALLED, ON).when(switch_on).then(ON)


def test_a_missing_error_fails():
    with pytest.raises(AssertionError, match=r"expected DomainError\('x'\), but .* raised nothing"):
        given(INSTALLED).when(switch_on).then_error(DomainError, "x")


def test_a_wrong_error_type_fails():
    with pytest.raises(AssertionError, match=r"expected ValueError\(.*\), got DomainError\("):
        given(INSTALLED, ON).when(switch_on).then_error(
            ValueError, "the lamp in hall is already on"
        )


def test_a_wrong_error_message_fails():
    with pytest.raises(
        AssertionError, match=r"got DomainError\('the lamp in hall is already on'\)"
    ):
        given(INSTALLED, ON).when(switch_on).then_error(DomainError, "the lamp is on")


def test_an_error_after_an_event_fails():
    def switch_on_twice(lamp: Lamp) -> None:
        lamp.switch_on("ann")
        lamp.switch_on("ann")

    with pytest.raises(AssertionError, match=r"(?s)recorded other events.*\+Lamp.SwitchedOn"):
        given(INSTALLED).when(switch_on_twice).then_error(
            DomainError, "the lamp in hall is already on"
        )


def test_a_state_change_without_an_event_fails():
    with pytest.raises(AssertionError, match=r"(?s)beyond its events.*-.*'hall'.*\+.*'attic'"):
        given(INSTALLED).when(lambda lamp: lamp.move("attic")).then()


def test_the_aggregate_the_events_make_answers_queries():
    lamp = given(INSTALLED, ON).aggregate

    assert (lamp.room, lamp.on, lamp.version) == ("hall", True, 2)
