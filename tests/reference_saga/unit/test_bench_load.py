"""The load generator says why requests failed: counted by reason, the first few logged."""

import inspect
import logging

import pytest
import uvicorn
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench import http as bench_http
from bench import load


async def test_a_request_that_raises_is_an_error_counted_by_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reason = "ConnectionResetError: reset by peer (test_bench_load)"
    before = load.failures[reason]

    async def refused(i: int) -> bool:
        raise ConnectionResetError("reset by peer (test_bench_load)")

    with caplog.at_level(logging.WARNING, logger="bench"):
        run = await load.open_loop(1000, 5, refused)

    assert run.errors == 5
    assert load.failures[reason] - before == 5
    logged = [r for r in caplog.records if "test_bench_load" in r.getMessage()]
    assert len(logged) == min(5, max(0, load.LOGGED_PER_REASON - before))


async def test_an_answer_other_than_the_expected_one_is_counted_with_its_status_and_body() -> None:
    async def conflict(request: web.Request) -> web.Response:
        return web.json_response({"detail": "key reused (test_bench_load)"}, status=409)

    app = web.Application()
    app.router.add_post("/orders", conflict)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        bench_http.client(str(server.make_url("/")), 1) as http,
    ):
        answer = await bench_http.post_json(http, "/orders", {"a": 1}, expect=201)

    assert answer is None
    [reason] = [r for r in load.failures if "test_bench_load" in r and "409" in r]
    assert reason.startswith("POST /orders answered 409: ")
    assert "key reused" in reason


def test_the_bench_client_lets_go_of_an_idle_connection_before_the_api_closes_it() -> None:
    # From the signature: making a uvicorn.Config configures logging for the process.
    api_keepalive = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert bench_http.KEEPALIVE_SECONDS < api_keepalive
