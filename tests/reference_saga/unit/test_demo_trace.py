"""The demo prints its approved order's trace, as `cqrs trace` does."""

from devstack import demo
from tests.unit.test_trace_tree import directory  # the fixture: the spans' files

__all__ = ["directory"]


def test_the_demo_prints_its_orders_trace(directory, capsys):
    scenario = demo.scenarios()[0]
    scenario.order_id = "order-1"
    env = {"OTEL_TRACES_EXPORTER": "otlp_json_file", "TRACES_DIR": str(directory)}

    demo.show_trace(scenario, env)

    printed = capsys.readouterr().out
    assert "as one trace (cqrs trace order-1)" in printed
    assert "  orders-api      POST /orders" in printed
