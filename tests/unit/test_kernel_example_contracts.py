"""The tallies' test-only contracts are known to the registry's lookups only inside
``registered()``, and never to what the schemas, their check and the AsyncAPI document
are made from."""

import pytest

from contracts import registry
from contracts.base import ContractEvent
from tests.kernel_example.contracts import TallyStarted, TallyStartedV1, registered


def test_the_tallies_contracts_are_looked_up_only_while_registered():
    def known() -> bool:
        return registry.model_of("tallies.TallyStarted.v2") is TallyStarted

    assert not known()
    with registered():
        assert known()
        assert registry.model_of("tallies.TallyStarted.v1") is TallyStartedV1
        registry.check_also_publish({"tallies.TallyStarted.v1"})
        assert not {TallyStarted, TallyStartedV1} & set(registry.ALL_EVENTS)
        assert not any(
            service.__name__.startswith("tests.") for service in registry.SERVICE_CONTRACTS
        )
    assert not known()
    with pytest.raises(ValueError, match="cannot also publish tallies.TallyStarted.v1"):
        registry.check_also_publish({"tallies.TallyStarted.v1"})


def test_a_contract_event_names_itself_with_a_name_and_a_version():
    assert (TallyStarted.name, TallyStarted.version) == ("tallies.TallyStarted", "2.0")
    assert TallyStarted.type() == "tallies.TallyStarted.v2"
    with pytest.raises(TypeError, match="Half: give a contract event a name and a version"):

        class Half(ContractEvent, name="tallies.Half"):
            tally_id: str
