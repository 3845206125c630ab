"""The request guard in front of a command API in a process of its own (the kernel's
tallies API): body limits, the body read timeout, content types, strict JSON, and what
each does to the connection. Each refusal is a problem document and stores nothing.
"""

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.servers import free_port
from tests import processes
from tests.http_wire import Wire
from tests.support import wait_for

MAX_BODY_BYTES = 100_000
BODY_READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def tallies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The tallies API's URL and its SQLite store."""
    tmp = tmp_path_factory.mktemp("guard")
    store = tmp / "tallies.db"
    port = free_port()
    env = {
        "TALLIES_DATABASE_URL": f"sqlite:///{store}",
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "BODY_READ_TIMEOUT": str(BODY_READ_TIMEOUT),
    }
    api = processes.api("tallies-api", "tests.kernel_example.api:create_app", port, env, tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/health").raise_for_status(),
            timeout=60,
            ignore=(httpx.TransportError, httpx.HTTPStatusError),
        )
        yield url, store
        assert api.alive(), processes.logs(api)
        assert "Traceback" not in api.log(), processes.logs(api)
    finally:
        api.stop()


def stored(store: Path) -> int:
    """Events in the store (every table of events)."""
    with sqlite3.connect(store) as connection:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if "event" in name
        ]
        return sum(connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)


def still_serves(wire: Wire) -> None:
    """The same connection answers the next request: the server kept it."""
    assert wire.request("GET", "/health").status == 200


# --------------------------------------------------------------------------- 413


def test_a_body_announced_over_the_limit_is_413_at_once_and_the_connection_closed(tallies):
    url, store = tallies
    before = stored(store)
    with Wire(url) as wire:
        started = time.monotonic()
        # 50 MB announced, nothing of it sent: the answer cannot wait for the body.
        head = {"Content-Type": "application/json", "Content-Length": str(50_000_000)}
        wire.sock.sendall(wire.head("POST", "/tallies", head))
        problem = wire.answer().problem(413)
        assert time.monotonic() - started < BODY_READ_TIMEOUT
        assert str(MAX_BODY_BYTES) in problem["detail"]
        assert wire.closed_by_server(within=2)
    assert stored(store) == before


def test_a_chunked_body_is_refused_once_it_passes_the_limit(tallies):
    url, store = tallies
    before = stored(store)
    with Wire(url) as wire:
        head = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        wire.sock.sendall(wire.head("POST", "/tallies", head))
        chunk = b'{"name": "' + b"x" * 16_000
        sent = 0
        while sent <= MAX_BODY_BYTES + len(chunk):  # past the limit, never the last chunk
            wire.sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
        wire.answer().problem(413)
        assert wire.closed_by_server(within=2)
    assert stored(store) == before


def test_a_body_just_under_the_limit_is_read_and_validated(tallies):
    url, _ = tallies
    with Wire(url) as wire:
        body = json.dumps({"name": "t", "padding": [1] * 30_000}).encode()
        assert len(body) < MAX_BODY_BYTES
        problem = wire.request("POST", "/tallies", body).problem(422)
        assert [error["loc"] for error in problem["errors"]] == [["body", "padding"]]
        assert "input" not in problem["errors"][0]  # a list is never echoed
        still_serves(wire)


# --------------------------------------------------------------------------- 408


def test_a_body_announced_and_not_sent_is_408_and_closed_within_the_timeout(tallies):
    url, store = tallies
    before = stored(store)
    with Wire(url) as wire:
        started = time.monotonic()
        head = {"Content-Type": "application/json", "Content-Length": str(MAX_BODY_BYTES)}
        wire.sock.sendall(wire.head("POST", "/tallies", head) + b'{"name": ')
        problem = wire.answer().problem(408)
        waited = time.monotonic() - started
        assert BODY_READ_TIMEOUT * 0.9 <= waited < BODY_READ_TIMEOUT + 2, waited
        assert f"{BODY_READ_TIMEOUT:g} s" in problem["detail"]
        assert wire.closed_by_server(within=1)
    assert stored(store) == before


# --------------------------------------------------------------------------- 415


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"name": "t"}'),
        ("application/x-www-form-urlencoded", b"name=t"),
        ("application/xml", b"<tally><name>t</name></tally>"),
        ("text/xml; charset=utf-8", b"<tally/>"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="name"'),
        (None, b'{"name": "t"}'),
    ],
)
def test_a_body_that_is_not_json_is_415(tallies, content_type, body):
    url, store = tallies
    before = stored(store)
    with Wire(url) as wire:
        problem = wire.request("POST", "/tallies", body, content_type=content_type).problem(415)
        assert "application/json" in problem["detail"]
        still_serves(wire)
    assert stored(store) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.tally+json"],
)
def test_json_media_types_pass(tallies, content_type):
    url, _ = tallies
    with Wire(url) as wire:
        body = json.dumps({"name": f"t-{uuid.uuid4().hex[:8]}"}).encode()
        answer = wire.request("POST", "/tallies", body, content_type=content_type)
        assert answer.status == 201, answer.body
        still_serves(wire)


# --------------------------------------------------------------------------- 422


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"name": NaN}', ["body"]),
        (b'{"name": Infinity}', ["body"]),
        (b'{"name": -Infinity}', ["body"]),
        (b'{"name": "a\\ud800b"}', ["body"]),  # a lone surrogate, escaped
        (b'{"name": "a\xed\xa0\x80b"}', ["body"]),  # the same, raw: not UTF-8
        (b'{"name": "t", "x": [1e400]}', ["body", "x", 0]),
        (b'{"name": "t", "x": {"y": -1e400}}', ["body", "x", "y"]),
        (b'{"name": "t", "x": 18446744073709551616}', ["body", "x"]),  # 2**64
        (b'{"name": "t", "x": 9223372036854775808}', ["body", "x"]),  # 2**63
        (b'{"name": "t", "x": ' + b"9" * 5000 + b"}", ["body"]),
        (b"[" * 5000 + b"]" * 5000, ["body"]),  # nested deeper than the parser goes
        (b'{"name": "t"', ["body"]),
    ],
)
def test_json_that_is_not_strict_or_not_storable_is_422(tallies, body, loc):
    url, store = tallies
    before = stored(store)
    with Wire(url) as wire:
        problem = wire.request("POST", "/tallies", body).problem(422)
        assert [error["loc"] for error in problem["errors"]] == [loc]
        still_serves(wire)
    assert stored(store) == before


def test_the_largest_integers_pass_the_guard(tallies):
    url, _ = tallies
    with Wire(url) as wire:
        for number in (2**63 - 1, -(2**63)):
            body = json.dumps({"name": "t", "x": number}).encode()
            problem = wire.request("POST", "/tallies", body).problem(422)
            # Past the guard: the model refuses the unknown field, not the number.
            assert problem["errors"][0]["type"] == "extra_forbidden"
            assert problem["errors"][0]["input"] == number


def test_a_value_of_the_wrong_json_type_is_422_and_echoed_safely(tallies):
    url, _ = tallies
    with Wire(url) as wire:
        problem = wire.request("POST", "/tallies", b'{"name": 5}').problem(422)
        assert problem["errors"] == [
            {
                "type": "string_type",
                "loc": ["body", "name"],
                "msg": "Input should be a valid string",
                "input": 5,
            }
        ]
        still_serves(wire)
