"""A relay's ``to_contract`` from a table (``kernel.relay.contract_mapping``), on the
tallies: fields read by name or computed, private events, and the mistakes it refuses."""

from operator import attrgetter

import pytest

from kernel.relay import aggregate_id, contract_mapping
from tests.kernel_example import contracts as contract
from tests.kernel_example.domain import Tally
from tests.kernel_example.relay import to_contract


def tally_events() -> tuple[Tally, list]:
    tally = Tally("cups", unit="cups")
    tally.add(3)
    tally.close("enough")
    return tally, tally.collect_events()


def test_each_event_becomes_its_contract_with_fields_read_by_name_or_computed():
    tally, [started, added, closed] = tally_events()
    tally_id = str(tally.id)

    assert to_contract(started) == contract.TallyStarted(
        tally_id=tally_id, tally_name="cups", unit="cups"
    )
    assert to_contract(added) == contract.TallyAdded(tally_id=tally_id, amount=3)
    assert to_contract(closed) == contract.TallyClosed(tally_id=tally_id, reason="enough")


def test_a_private_event_stays_private_and_an_unmapped_one_is_a_type_error():
    _, [started, added, closed] = tally_events()
    only_closing = contract_mapping(
        {Tally.Closed: contract.TallyClosed},
        private=(Tally.Added,),
        computed={"tally_id": aggregate_id},
    )

    assert only_closing(added) is None
    assert only_closing(closed) == contract.TallyClosed(
        tally_id=str(closed.originator_id), reason="enough"
    )
    with pytest.raises(TypeError, match="no contract mapping for domain event Tally.Started"):
        only_closing(started)


def test_a_contract_field_the_event_does_not_hold_is_refused_when_the_table_is_made():
    with pytest.raises(
        TypeError, match="Tally.Started has no tally_id, tally_name for TallyStarted"
    ):
        contract_mapping({Tally.Started: contract.TallyStarted})

    contract_mapping(
        {Tally.Started: contract.TallyStarted},
        computed={"tally_id": aggregate_id, "tally_name": attrgetter("name")},
    )
