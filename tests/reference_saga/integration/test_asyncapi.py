"""The AsyncAPI document: valid AsyncAPI 3.0.0, complete, and served by the query API.

Validated against the official AsyncAPI 3.0.0 JSON Schema, vendored from the npm package
``@asyncapi/specs`` 6.11.1 (Apache-2.0; tests/fixtures/README.md).
"""

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from contracts import registry
from contracts.asyncapi import document
from contracts.schemas import schema_of
from tests.reference_saga.integration.test_query_api import query_api

ASYNCAPI_SCHEMA = Path(__file__).parents[2] / "fixtures" / "asyncapi-3.0.0.schema.json.gz"


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    return Draft7Validator(json.loads(gzip.decompress(ASYNCAPI_SCHEMA.read_bytes())))


def errors(validator: Draft7Validator, spec: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in validator.iter_errors(spec)
    ]


def test_the_document_is_valid_asyncapi_3(validator: Draft7Validator) -> None:
    assert errors(validator, document()) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda spec: (
            spec["channels"]["orders"].pop("address")
            and spec["channels"]["orders"].update(adress="orders")
        ),
        lambda spec: spec["operations"]["orders.publish"].update(action="publish"),
        lambda spec: spec.update(asyncapi="2.6.0"),
    ],
    ids=["misspelt-field", "v2-operation-action", "wrong-version"],
)
def test_the_validator_catches_a_broken_document(validator: Draft7Validator, breakage) -> None:
    spec = copy.deepcopy(document())
    breakage(spec)
    assert errors(validator, spec) != []


def test_every_topic_and_contract_type_has_its_channel_and_message() -> None:
    spec = document()

    for service in registry.SERVICE_CONTRACTS:
        assert spec["channels"][service.TOPIC]["address"] == service.TOPIC
        assert spec["channels"][f"{service.TOPIC}.dead-letters"]["messages"]
    for model in registry.ALL_EVENTS:
        message = spec["components"]["messages"][model.type()]
        channel = spec["channels"][registry.topic_of(model)]
        assert channel["messages"][model.type()] == {
            "$ref": f"#/components/messages/{model.type()}"
        }
        payload = message["payload"]["properties"]
        assert payload["type"]["const"] == model.type()
        assert payload["data"]["properties"] == schema_of(model)["properties"]
        assert message["headers"]["properties"]["ce_type"]["const"] == model.type()
        assert {"ce_id", "ce_source", "ce_time", "ce_correlationid"} <= set(
            message["headers"]["required"]
        )
    superseded = spec["components"]["messages"]["orders.OrderCreated.v1"]
    assert superseded["tags"] == [{"name": "superseded"}]


async def test_the_query_api_serves_the_document_and_its_page(
    mongo_url: str, mongo_database: str
) -> None:
    async with query_api(mongo_url, mongo_database) as api:
        as_json = await api.get("/asyncapi.json")
        page = await api.get("/asyncapi")
        openapi = await api.get("/openapi.json")

    assert as_json.status_code == 200 and as_json.json() == document()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<h3 id='orders.OrderCreated.v2'>orders.OrderCreated.v2</h3>" in page.text
    assert "<script" not in page.text
    assert "(/asyncapi)" in openapi.json()["info"]["description"]


def test_the_cli_prints_the_same_document(capsys: pytest.CaptureFixture[str]) -> None:
    from devstack.cli import main

    assert main(["contracts", "asyncapi"]) == 0
    assert json.loads(capsys.readouterr().out) == document()


def test_an_html_page_renders_without_a_server() -> None:
    from read_side.asyncapi_page import render

    page = render(document())
    assert page.count("<h3 id=") == len(registry.ALL_EVENTS) + 1  # and DeadLetter
    assert "<a href='asyncapi.json'>" in page  # relative to /asyncapi: /asyncapi.json
