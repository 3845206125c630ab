"""Problem details that can always be encoded, and the answer to an unexpected error."""

import json
import math

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from kernel.http_api import create_api
from kernel.problems import problem, safe_errors, safe_scalar
from kernel.request_guard import is_json, unstorable_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        ("a\ud800b", "a\\ud800b"),
        (b"\xff\x00", "\ufffd\x00"),
        (2**70, "an integer beyond 64 bits"),
        (2**63, 2**63),
        (True, True),
        (None, None),
        ("x" * 300, "x" * 200 + "…"),
    ],
)
def test_a_value_is_made_json_safe(value, expected):
    assert safe_scalar(value) == expected
    json.dumps(safe_scalar(value), allow_nan=False).encode()


def test_errors_echo_only_scalars_and_always_encode():
    errors = [
        {"type": "finite_number", "loc": ("body", "x"), "msg": "bad", "input": math.nan},
        {"type": "too_long", "loc": ("body", "items"), "msg": "long", "input": [1, 2, 3]},
        {
            "type": "value_error",
            "loc": ("body", "a\udc00"),
            "msg": "m\ud800",
            "input": b"\xff",
            "ctx": {"error": ValueError("e\ud800"), "limit": math.inf},
        },
    ]
    safe = safe_errors(errors)
    assert safe[0]["input"] == "nan"
    assert "input" not in safe[1]
    assert safe[2]["loc"] == ["body", "a\\udc00"] and safe[2]["ctx"]["limit"] == "inf"
    json.dumps(safe, allow_nan=False, ensure_ascii=False).encode()


def test_a_problem_that_cannot_be_encoded_falls_back_to_its_title():
    response = problem(409, detail="x", bad=math.nan)
    assert json.loads(response.body) == {"type": "about:blank", "title": "Conflict", "status": 409}


@pytest.mark.parametrize(
    ("content_type", "json_"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json", True),
        ("text/json", False),
        ("text/plain", False),
        ("application/jsonx", False),
        (None, False),
        ("", False),
    ],
)
def test_json_media_types(content_type, json_):
    assert is_json(content_type) is json_


def test_an_unstorable_number_is_found_where_it_is():
    assert unstorable_number({"a": [1, {"b": math.inf}]}, ["body"]) == (
        ["body", "a", 1, "b"],
        "a number too large for a 64-bit float",
    )
    assert unstorable_number({"a": [True, 2**63 - 1, -(2**63), 1.5]}, ["body"]) is None
    assert unstorable_number([2**63], []) == ([0], "an integer beyond signed 64 bits")


class Item(BaseModel):
    quantity: int = Field(gt=0)


def failing_app() -> FastAPI:
    app = create_api(title="test")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.post("/items")
    async def items(item: Item) -> Item:
        return item

    return app


async def test_an_unexpected_error_is_a_500_problem():
    transport = httpx.ASGITransport(app=failing_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Internal Server Error"
        assert "a bug" not in response.text


async def test_the_openapi_document_lists_the_problems():
    transport = httpx.ASGITransport(app=failing_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        document = (await client.get("/openapi.json")).json()
    responses = document["paths"]["/items"]["post"]["responses"]
    assert set(responses) == {"200", "408", "413", "415", "422"}
    assert responses["422"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}
    }
    assert responses["415"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert set(document["paths"]["/boom"]["get"]["responses"]) == {"200"}
