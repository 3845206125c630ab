"""Each API's OpenAPI document names every schema after its model, once: two models of
one name in one API (say, a status enum declared in two read-side modules) would show as
``read_side__kitchen__TicketStatus`` and ``read_side__orders__TicketStatus``, and a
client generated from the document would get two types for one thing."""

from collections.abc import Callable

import pytest
from fastapi import FastAPI

from read_side.api import create_app as query_api
from write_side.accounting.api import create_app as accounting_api
from write_side.consumers.api import create_app as consumers_api
from write_side.kitchen.api import create_app as kitchen_api
from write_side.orders.api import create_app as orders_api


@pytest.mark.parametrize(
    "create_app", [query_api, orders_api, consumers_api, kitchen_api, accounting_api]
)
def test_every_schema_is_named_after_its_model_once(create_app: Callable[[], FastAPI]) -> None:
    names = create_app().openapi()["components"]["schemas"]
    qualified = [name for name in names if "__" in name or name.endswith(("-Input", "-Output"))]
    assert qualified == []
