"""Each saga worker reads the topics of the events its reactions handle (`kernel.saga`):
no reaction can wait on a topic its worker does not read."""

from types import ModuleType

import pytest

from contracts import accounting, consumers, kitchen, orders
from contracts.registry import topic_of
from write_side.accounting import saga as accounting_saga
from write_side.consumers import saga as consumers_saga
from write_side.kitchen import saga as kitchen_saga
from write_side.orders import saga as orders_saga


@pytest.mark.parametrize(
    ("saga", "topics"),
    [
        (orders_saga, [accounting.TOPIC, consumers.TOPIC, kitchen.TOPIC]),
        (consumers_saga, [orders.TOPIC]),
        (kitchen_saga, [accounting.TOPIC, consumers.TOPIC]),
        (accounting_saga, [kitchen.TOPIC]),
    ],
)
def test_a_saga_worker_reads_each_topic_of_its_reactions_events_once(
    saga: ModuleType, topics: list[str]
) -> None:
    [agent] = saga.app.agents.values()
    read = agent.channel.topics

    assert sorted(read) == topics
    assert set(read) == {topic_of(reaction.event) for reaction in saga.REACTIONS}
