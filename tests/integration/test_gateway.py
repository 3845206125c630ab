"""The Envoy gateway, as a real process in front of real API processes and a recording stub.

One gateway for the module routes to the APIs of the Procfile (one of them, `SCALED`,
in two processes) and to `stub-api`, a stand-in upstream that records what reaches it: a
request the gateway refuses never gets there. A second, small gateway shows the rate
limit. Everything listens on 127.0.0.1, on free ports.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import identity
from devstack.gateway import (
    Api,
    Gateway,
    GatewaySettings,
    Route,
    compose_config,
    discover_apis,
    envoy_config,
    validate,
    write_config,
)
from devstack.processes import Process, api, logs, stop_all
from devstack.run import API_PORTS
from devstack.servers import REPO_ROOT, free_port
from tests import support
from tests.support import wait_for
from tests.token_attacks import ATTACKS, attack_token

SCALED = "query-api"
"""The API that runs as two processes behind the gateway."""
REQUEST_TIMEOUT = 2.0
MAX_BODY = 64 * 1024
STUB_ROUTES = [
    Route(frozenset({"GET", "POST"}), "/echo"),
    Route(frozenset({"GET", "POST"}), "/fail-once/{key}"),
    Route(frozenset({"GET"}), "/slow"),
    Route(frozenset({"GET"}), "/broken"),
]


@dataclass
class Stack:
    gateway: Gateway
    auth_dir: Path
    stub_log: Path
    stub_port: int
    apis: list[Api]
    config: dict[str, Any]

    @property
    def url(self) -> str:
        return self.gateway.url

    def token(self, subject: str = "cust-ok", role: str = "customer") -> str:
        return identity.mint_token(subject, [role], auth_dir=self.auth_dir)

    def bearer(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token()}"}

    def stub_requests(self) -> list[dict[str, Any]]:
        """What reached the stub, but the gateway's own health checks."""
        if not self.stub_log.exists():
            return []
        requests = [json.loads(line) for line in self.stub_log.read_text().splitlines()]
        return [r for r in requests if r["headers"].get("user-agent") != HEALTH_CHECKER]


HEALTH_CHECKER = "Envoy/HC"
"""The user agent of the gateway's active health checks (of `/health/ready`)."""


def wait_routable(gateway: Gateway, hosts: int) -> None:
    """Until the gateway has seen ``hosts`` processes ready (``tests.support``)."""
    support.wait_routable(gateway.admin_url, hosts)


def _wait_healthy(url: str, process: Process) -> None:
    def healthy() -> bool:
        assert process.alive(), logs(process)
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=90, interval=0.2, message=f"{url}: {logs(process)}")


@pytest.fixture(scope="module")
def auth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth")
    identity.ensure_keys(path)
    return path


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, auth_dir: Path, mongo_url: str
) -> Iterator[Stack]:
    """Every API of the Procfile (`SCALED` twice), the stub, and the gateway before them."""
    work = tmp_path_factory.mktemp("gateway")
    env = {
        name.replace("_API_PORT", "_DATABASE_URL"): f"sqlite:///{work}/{name[:-9].lower()}.db"
        for name in API_PORTS
    }
    env |= {name: str(free_port()) for name in API_PORTS}
    env |= {
        "AUTH_JWKS_URL": (auth_dir / identity.JWKS_FILE).as_uri(),
        "KAFKA_FETCH_WAKEUP_DIR": "",
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": f"gateway_{uuid.uuid4().hex[:8]}",
    }
    procfile = (REPO_ROOT / "Procfile").read_text()
    apis = discover_apis(procfile, env, extra_ports={SCALED: [free_port()]})
    stub_port, stub_log = free_port(), work / "stub.jsonl"
    apis.append(Api("stub-api", [("127.0.0.1", stub_port)], STUB_ROUTES))
    settings = GatewaySettings(
        port=free_port(),
        admin_port=free_port(),
        request_timeout=REQUEST_TIMEOUT,
        stream_idle_timeout=5.0,
        max_request_bytes=MAX_BODY,
        jwks_url=(auth_dir / identity.JWKS_FILE).as_uri(),
    )
    config = envoy_config(apis, settings, access_log_path=str(work / "access.log"))
    gateway = Gateway(work / "envoy", write_config(config, work / "envoy.json"), settings)
    processes: list[Process] = []
    started: list[tuple[Process, int]] = []
    try:
        stub_argv = [sys.executable, str(REPO_ROOT / "tests" / "gateway_upstream.py")]
        processes.append(Process("stub", [*stub_argv, str(stub_port), str(stub_log)], {}, work))
        for item in apis[:-1]:
            for number, (_, port) in enumerate(item.endpoints, 1):
                process = api(f"{item.name}-{number}", item.factory, port, env, work)
                processes.append(process)
                started.append((process, port))
        gateway.start()
        for process, port in started:
            _wait_healthy(f"http://127.0.0.1:{port}", process)
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{stub_port}/echo", timeout=1),
            timeout=30,
            ignore=(httpx.HTTPError,),
        )
        wait_routable(gateway, sum(len(item.endpoints) for item in apis))
        stub_log.unlink(missing_ok=True)
        yield Stack(gateway, auth_dir, stub_log, stub_port, apis, config)
    finally:
        gateway.stop()
        stop_all(processes)


# ------------------------------------------------------------------------ validate


def test_envoy_validates_the_local_and_the_compose_configuration(
    tmp_path: Path, auth_dir: Path
) -> None:
    env = {name: port for name, port in API_PORTS.items()}
    settings = GatewaySettings(jwks_url=(auth_dir / identity.JWKS_FILE).as_uri())
    apis = discover_apis((REPO_ROOT / "Procfile").read_text(), env)
    local = envoy_config(apis, settings, access_log_path=str(tmp_path / "access.log"))
    compose = compose_config(
        GatewaySettings(jwks_url="http://keycloak:8080/realms/cqrs/protocol/openid-connect/certs")
    )
    for name, config in (("local", local), ("compose", compose)):
        result = validate(write_config(config, tmp_path / f"{name}.json"))
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    broken = json.loads(json.dumps(local))
    broken["static_resources"]["clusters"][0]["lb_policy"] = "NO_SUCH_POLICY"
    result = validate(write_config(broken, tmp_path / "broken.json"))
    assert result.returncode != 0  # the check really checks


# ------------------------------------------------------------------------- routing


def _cluster_requests(stack: Stack) -> dict[str, int]:
    stats = stack.gateway.stats("cluster.")
    return {
        name.split(".")[1]: value
        for name, value in stats.items()
        if name.endswith(".upstream_rq_total")
    }


def test_every_api_is_reachable_under_its_prefix(stack: Stack) -> None:
    titles = {}
    for item in stack.apis[:-1]:
        answer = httpx.get(f"{stack.url}/{item.name}/openapi.json", timeout=10)
        assert answer.status_code == 200, (item.name, answer.text)
        titles[item.name] = answer.json()["info"]["title"]
        health = httpx.get(f"{stack.url}/{item.name}/health", timeout=10)
        assert health.status_code == 200, (item.name, health.text)
    assert titles["query-api"] == "Query API"
    assert len(set(titles.values())) == len(titles)


ROOT_ROUTES = [
    ("GET", "/projections", "query-api", "query-api"),
    ("GET", "/orders/{id}", "query-api", "orders-api"),  # both serve it: reads go to the read side
    ("POST", "/orders/{id}/cancel", "orders-api", "orders-api"),
    ("GET", "/tickets/{id}", "query-api", "kitchen-api"),
    ("GET", "/restaurants/rest-1", "kitchen-api", "kitchen-api"),
    ("GET", "/accounts/cust-1", "accounting-api", "accounting-api"),
    ("GET", "/consumers/cust-1", "consumers-api", "consumers-api"),
    ("POST", "/orders", "orders-api", "orders-api"),
]
"""Routes, the API that serves each, and the API whose domain it belongs to: checked where
the project has that domain (the reference saga's routes, in a project made without it,
are not)."""
_PROCFILE_APIS = set(
    re.findall(r"^([\w-]+-api):", (REPO_ROOT / "Procfile").read_text(), re.MULTILINE)
)


@pytest.mark.parametrize(
    ("method", "path", "cluster"),
    [route[:3] for route in ROOT_ROUTES if route[3] in _PROCFILE_APIS],
)
def test_root_routes_go_to_the_api_that_serves_them(
    stack: Stack, method: str, path: str, cluster: str
) -> None:
    before = _cluster_requests(stack)
    body = {"reason": "x"} if method == "POST" else None
    url = f"{stack.url}{path.replace('{id}', str(uuid.uuid4()))}"
    answer = httpx.request(method, url, json=body, headers=stack.bearer(), timeout=10)
    assert answer.status_code != 401 or "Jwt" not in answer.text, answer.text
    after = _cluster_requests(stack)
    changed = {name for name in after if after[name] != before.get(name, 0)}
    assert changed == {cluster}, (changed, answer.status_code, answer.text)


def test_the_two_processes_of_an_api_both_receive_requests(stack: Stack) -> None:
    for _ in range(30):
        answer = httpx.get(f"{stack.url}/{SCALED}/health", timeout=10)
        assert answer.status_code == 200
    text = httpx.get(f"{stack.gateway.admin_url}/clusters", timeout=5).text
    counts = {
        host: int(value)
        for host, value in re.findall(
            rf"^{SCALED}::([\d.]+:\d+)::rq_total::(\d+)$", text, re.MULTILINE
        )
    }
    assert len(counts) == 2, text
    assert all(value > 0 for value in counts.values()), counts


def test_the_gateway_answers_its_own_health_without_a_token(stack: Stack) -> None:
    answer = httpx.get(f"{stack.url}/health", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


# ----------------------------------------------------------------------------- JWT


def test_a_valid_token_passes_and_is_forwarded(stack: Stack) -> None:
    token = stack.token()
    answer = httpx.get(f"{stack.url}/echo", headers=stack.bearer(token), timeout=5)
    assert answer.status_code == 200, answer.text
    assert stack.stub_requests()[-1]["headers"]["authorization"] == f"Bearer {token}"


LEFT_TO_THE_SERVICES = {"issued in the future"}
"""Attacks Envoy's jwt_authn lets through (it does not check `iat`); every API refuses
them itself (tests/integration/test_auth.py)."""


def _gateway_answer(stack: Stack, attack: str, method: str) -> httpx.Response:
    token = attack_token(attack, stack.auth_dir)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.request(method, f"{stack.url}/echo", headers=headers, json={}, timeout=5)


def test_every_token_attack_is_refused_at_the_gateway(stack: Stack) -> None:
    passed = set()
    for attack in ATTACKS:
        seen = len(stack.stub_requests())
        for method in ("GET", "POST"):
            answer = _gateway_answer(stack, attack, method)
            if answer.status_code != 401:
                passed.add(attack)
                continue
            assert answer.headers["content-type"] == "application/problem+json", attack
            assert answer.json()["status"] == 401, (attack, answer.text)
            assert answer.headers.get("www-authenticate", "").startswith("Bearer"), attack
        if attack not in passed:
            assert len(stack.stub_requests()) == seen, f"{attack}: the upstream saw it"
    assert passed == LEFT_TO_THE_SERVICES


def test_no_token_is_refused_before_any_api(stack: Stack) -> None:
    before = _cluster_requests(stack)
    answer = httpx.get(f"{stack.url}/projections", timeout=5)
    assert answer.status_code == 401
    assert _cluster_requests(stack) == before


def test_health_and_docs_are_open(stack: Stack) -> None:
    for path in (f"/{SCALED}/health", f"/{SCALED}/openapi.json", "/query-api/docs"):
        answer = httpx.get(f"{stack.url}{path}", timeout=10)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)


def test_a_docs_page_under_a_prefix_gets_its_own_api_document(stack: Stack) -> None:
    """Swagger UI at `/<api>/docs` asks the root for `/openapi.json`: its API answers."""
    for item in stack.apis[:-1]:
        page = f"{stack.url}/{item.name}/docs"
        assert "/openapi.json" in httpx.get(page, timeout=10).text
        document = httpx.get(f"{stack.url}/openapi.json", headers={"referer": page}, timeout=10)
        assert document.status_code == 200, (item.name, document.text)
        direct = httpx.get(f"{stack.url}/{item.name}/openapi.json", timeout=10)
        assert document.json() == direct.json()
    assert httpx.get(f"{stack.url}/openapi.json", timeout=10).status_code == 404


# -------------------------------------------------------------------------- limits


def test_a_body_over_the_limit_is_refused_413_at_the_gateway(stack: Stack) -> None:
    seen = len(stack.stub_requests())
    answer = httpx.post(
        f"{stack.url}/echo",
        content=b"x" * (MAX_BODY * 2),
        headers={**stack.bearer(), "content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert len(stack.stub_requests()) == seen
    small = httpx.post(f"{stack.url}/echo", content=b"{}", headers=stack.bearer(), timeout=10)
    assert small.status_code == 200


def test_a_body_announced_and_never_sent_is_closed_within_the_request_timeout(
    stack: Stack,
) -> None:
    request = (
        "POST /echo HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {stack.token()}\r\nContent-Length: 5000000\r\n\r\n"
    )
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", stack.gateway.port), timeout=15) as sock:
        sock.sendall(request.encode())
        while chunk := sock.recv(65536):
            received += chunk
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert REQUEST_TIMEOUT - 0.5 <= elapsed <= REQUEST_TIMEOUT + 3, elapsed


# --------------------------------------------------------------- headers, retries


def test_request_id_and_traceparent_reach_the_upstream(stack: Stack) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {**stack.bearer(), "x-request-id": "req-123", "traceparent": traceparent}
    answer = httpx.get(f"{stack.url}/echo", headers=headers, timeout=5)
    assert answer.status_code == 200
    seen = stack.stub_requests()[-1]["headers"]
    assert seen["x-request-id"] == "req-123"
    assert seen["traceparent"] == traceparent
    assert answer.headers["x-request-id"] == "req-123"
    generated = httpx.get(f"{stack.url}/echo", headers=stack.bearer(), timeout=5)
    assert uuid.UUID(stack.stub_requests()[-1]["headers"]["x-request-id"])
    assert generated.headers["x-request-id"] == stack.stub_requests()[-1]["headers"]["x-request-id"]


def test_a_get_is_retried_and_a_post_is_not(stack: Stack) -> None:
    key = uuid.uuid4().hex
    get = httpx.get(f"{stack.url}/fail-once/{key}", headers=stack.bearer(), timeout=10)
    post = httpx.post(f"{stack.url}/fail-once/{key}", headers=stack.bearer(), timeout=10)
    assert get.status_code == 200, get.text
    assert post.status_code == 502, post.text
    seen = [(r["method"], r["path"]) for r in stack.stub_requests()]
    assert seen.count(("GET", f"/fail-once/{key}")) == 2
    assert seen.count(("POST", f"/fail-once/{key}")) == 1


def test_every_api_cluster_has_a_circuit_breaker_and_outlier_detection(stack: Stack) -> None:
    clusters = stack.config["static_resources"]["clusters"]
    for item in stack.apis:
        (cluster,) = [c for c in clusters if c["name"] == item.name]
        (thresholds,) = cluster["circuit_breakers"]["thresholds"]
        assert {"max_connections", "max_pending_requests", "max_requests"} <= set(thresholds)
        assert cluster["outlier_detection"]["consecutive_5xx"] > 0
        assert len(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]) == len(
            item.endpoints
        )
    text = httpx.get(f"{stack.gateway.admin_url}/clusters", timeout=5).text
    assert re.search(rf"^{SCALED}::default_priority::max_requests::1024$", text, re.MULTILINE), text


def test_the_access_log_has_a_json_line_per_request(stack: Stack) -> None:
    httpx.get(f"{stack.url}/echo", headers={**stack.bearer(), "x-request-id": "logged-1"})
    path = Path(
        stack.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"
        ]["access_log"][0]["typed_config"]["path"]
    )

    def logged() -> dict[str, Any] | None:
        if not path.exists():
            return None
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("request_id") == "logged-1":
                return dict(entry)
        return None

    entry = wait_for(logged, timeout=10, interval=0.2)
    assert entry["upstream"] == "stub-api"
    assert entry["subject"] == "cust-ok"
    assert entry["status"] == 200


def gateway_of_its_own(
    tmp_path: Path, auth_dir: Path, upstream_port: int | None, **settings: Any
) -> Gateway:
    """A small gateway of the test's own, ``settings`` changed, before the stub API (on
    ``upstream_port``; none: no API)."""
    gateway_settings = GatewaySettings(
        port=free_port(),
        admin_port=free_port(),
        jwks_url=(auth_dir / identity.JWKS_FILE).as_uri(),
        **settings,
    )
    apis = (
        []
        if upstream_port is None
        else [Api("stub-api", [("127.0.0.1", upstream_port)], STUB_ROUTES)]
    )
    config = envoy_config(apis, gateway_settings, access_log_path=str(tmp_path / "access.log"))
    return Gateway(
        tmp_path / "envoy", write_config(config, tmp_path / "envoy.json"), gateway_settings
    )


# ---------------------------------------------------------------------- rate limit


def assert_two_pass_then_429(answers: list[httpx.Response]) -> None:
    """A bucket of two: the first two pass, a later one is refused as a problem with
    ``Retry-After``."""
    codes = [answer.status_code for answer in answers]
    assert codes[:2] == [200, 200], codes
    assert 429 in codes, codes
    refused = answers[codes.index(429)]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"


def test_over_the_rate_limit_the_gateway_answers_429(tmp_path: Path, auth_dir: Path) -> None:
    with gateway_of_its_own(tmp_path, auth_dir, None, rate_limit=1, rate_limit_burst=2) as gw:
        statuses = [httpx.get(f"{gw.url}/health", timeout=5) for _ in range(6)]
    assert_two_pass_then_429(statuses)


def test_each_caller_has_a_rate_limit_of_its_own(stack: Stack, tmp_path: Path, auth_dir: Path):
    """A caller over its own limit gets 429; another caller, at the same moment, does not
    (the caller is the verified token's subject: a token for another audience or none
    takes nothing from anyone's bucket)."""
    busy, other = stack.bearer(stack.token("cust-busy")), stack.bearer(stack.token("cust-other"))
    limits = {"caller_rate_limit": 1, "caller_rate_limit_burst": 2}
    with gateway_of_its_own(tmp_path, auth_dir, stack.stub_port, **limits) as gw:
        wait_routable(gw, 1)
        busy_codes = [httpx.get(f"{gw.url}/echo", headers=busy, timeout=5) for _ in range(5)]
        other_codes = [httpx.get(f"{gw.url}/echo", headers=other, timeout=5) for _ in range(2)]
        health = [httpx.get(f"{gw.url}/health", timeout=5).status_code for _ in range(3)]
        limited = gw.stats("gateway_caller_rate_limit.http_local_rate_limit.rate_limited")
        limited = sum(limited.values())
    assert_two_pass_then_429(busy_codes)
    assert [answer.status_code for answer in other_codes] == [200, 200]
    assert health == [200, 200, 200]  # no caller: only the gateway's bucket
    refused = [answer for answer in busy_codes if answer.status_code == 429]
    assert limited == len(refused)  # all refused by the callers' filter


def test_beyond_its_thresholds_the_circuit_breaker_answers_503_at_once(
    stack: Stack, tmp_path: Path, auth_dir: Path
) -> None:
    """One request at a time, one waiting: of four at once, the others are refused."""
    thresholds = {"max_connections": 1, "max_pending_requests": 1, "max_requests": 1}
    with gateway_of_its_own(tmp_path, auth_dir, stack.stub_port, **thresholds) as gw:
        wait_routable(gw, 1)
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.get(f"{gw.url}/slow", headers=stack.bearer(), timeout=10),
                    range(4),
                )
            )
        overflows = gw.stats("cluster.stub-api.upstream_rq_pending_overflow")
    codes = sorted(answer.status_code for answer in answers)
    assert 200 in codes and 503 in codes, codes
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert refused.headers.get("x-envoy-overloaded") == "true"
    assert refused.headers["content-type"] == "application/problem+json"
    assert sum(overflows.values()) >= 1, overflows


def test_a_process_answering_5xx_in_a_row_is_detected_as_an_outlier(
    stack: Stack, tmp_path: Path, auth_dir: Path
) -> None:
    with gateway_of_its_own(tmp_path, auth_dir, stack.stub_port, outlier_consecutive_5xx=3) as gw:
        wait_routable(gw, 1)
        prefix = "cluster.stub-api.outlier_detection.ejections_detected_consecutive_5xx"
        for _ in range(2):
            assert httpx.get(f"{gw.url}/broken", headers=stack.bearer()).status_code == 500
        assert gw.stats(prefix) == {prefix: 0}
        assert httpx.get(f"{gw.url}/broken", headers=stack.bearer()).status_code == 500
        assert wait_for(lambda: gw.stats(prefix)[prefix], timeout=5) == 1


# ------------------------------------------------------------------ readiness


def test_the_gateway_sends_nothing_to_a_process_that_is_not_ready(
    stack: Stack, tmp_path: Path, auth_dir: Path
) -> None:
    """Its /health/ready answers 503: the gateway checks it, and answers 503 itself."""
    port, log = free_port(), tmp_path / "unready.jsonl"
    argv = [sys.executable, str(REPO_ROOT / "tests" / "gateway_upstream.py")]
    unready = Process("unready", [*argv, str(port), str(log), "unready"], {}, tmp_path)
    try:
        with gateway_of_its_own(tmp_path, auth_dir, port, health_check_interval=0.5) as gw:

            def checks() -> list[dict[str, Any]]:
                lines = log.read_text().splitlines() if log.exists() else []
                return [json.loads(line) for line in lines]

            wait_for(lambda: len(checks()) >= 2, timeout=20, message="no health check came")
            answer = httpx.get(f"{gw.url}/echo", headers=stack.bearer(), timeout=5)
            assert answer.status_code == 503, answer.text
            assert "no healthy upstream" in answer.text
            seen = checks()
            assert {(r["path"], r["headers"].get("user-agent")) for r in seen} == {
                ("/health/ready", HEALTH_CHECKER)
            }, seen
    finally:
        unready.stop()
