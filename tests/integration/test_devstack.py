"""The local stack tooling: servers start, answer, and stop without leaving a process."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from devstack.prometheus import prometheus_binary
from devstack.run import (
    DEAD_LETTER_TOPICS,
    SERVICE_TOPICS,
    SERVICES,
    default_environment,
    stack_topics,
    taken_ports,
)
from devstack.servers import (
    REPO_ROOT,
    KafkaBroker,
    ManagedServer,
    MongoServer,
    ServerError,
    create_topics,
    ensure_secantus_venv,
    free_port,
    list_topics,
    port_is_free,
    run_sync,
)
from devstack.services import find_services
from kernel.kafka import TopicMismatch, ensure_topics
from tests.support import wait_for

SERVERS = {"kafka": KafkaBroker, "mongo": MongoServer}


def pid_alive(pid: int) -> bool:
    """True if a (non-zombie) process has this PID."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port that another socket listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_free_port_is_free() -> None:
    assert port_is_free(free_port())


@pytest.mark.parametrize("kind", SERVERS)
def test_start_on_a_taken_port_is_a_clear_error(kind: str, taken_port: int, tmp_path: Path) -> None:
    server = SERVERS[kind](tmp_path, taken_port)
    env_name = {"kafka": "KAFKA_PORT", "mongo": "MONGODB_PORT"}[kind]
    expected = f"port {taken_port} is in use: stop what holds it or set {env_name}"
    with pytest.raises(ServerError, match=re.escape(expected)):
        server.start()
    assert server.pid is None  # nothing was launched


@pytest.mark.parametrize("kind", SERVERS)
def test_start_then_stop_leaves_no_process(kind: str, tmp_path: Path) -> None:
    if kind == "mongo":
        ensure_secantus_venv()
    server = SERVERS[kind](tmp_path)
    with server:
        pid = server.pid
        assert pid is not None
        assert pid_alive(pid)
        assert not port_is_free(server.port)
        assert os.getpgid(pid) == pid  # its own process group, stopped as one
    assert not pid_alive(pid)
    assert port_is_free(server.port)
    assert server.log_path.is_file()
    server.stop()  # a second stop is harmless


class _Crashes(ManagedServer):
    name = "crashes"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "print('boom: bad config', flush=True); raise SystemExit(3)"]

    def probe(self) -> bool:
        return False


class _NeverReady(_Crashes):
    name = "never-ready"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_server_that_exits_while_starting_reports_its_log(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"exited with code 3[\s\S]*boom: bad config"):
        _Crashes(tmp_path).start()


def test_a_server_that_never_answers_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    server = _NeverReady(tmp_path, ready_timeout=1.0)
    with pytest.raises(ServerError, match="did not answer"):
        server.start()
    assert server.pid is not None
    assert not pid_alive(server.pid)


def test_session_broker_creates_topics_idempotently(kafka_bootstrap: str) -> None:
    create_topics(kafka_bootstrap, ["devstack-test"], 3)
    create_topics(kafka_bootstrap, ["devstack-test"], 3)  # exists: fine
    assert "devstack-test" in run_sync(lambda: list_topics(kafka_bootstrap))
    with pytest.raises(TopicMismatch, match="exists with 3 partitions"):
        create_topics(kafka_bootstrap, ["devstack-test"], 5)


def test_session_mongo_answers(mongo_url: str) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        assert client.admin.command("ping")["ok"] == 1
    finally:
        client.close()


def test_default_environment_follows_the_ports() -> None:
    env = default_environment(
        {"KAFKA_PORT": "19093", "MONGODB_PORT": "37018", "QUERY_API_PORT": "18001"}
    )
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19093"
    assert env["MONGODB_URL"] == "mongodb://127.0.0.1:37018/?directConnection=true"
    assert env["QUERY_API_PORT"] == "18001"
    assert env["QUERY_API_URL"] == "http://127.0.0.1:18001"
    defaults = default_environment({})
    ports = {"QUERY": "8001"} | {
        service.name.upper(): str(service.api_port)  # its settings.py's API_PORT
        for service in find_services()
        if service.api_port is not None
    }
    for name, port in ports.items():
        assert defaults[f"{name}_API_PORT"] == port
        assert defaults[f"{name}_API_URL"] == f"http://127.0.0.1:{port}"
    for service in SERVICES:
        assert defaults[f"{service.upper()}_DATABASE_URL"] == f"sqlite:///var/{service}.db"


def test_stack_topics_are_every_service_topic_its_dead_letters_and_their_records() -> None:
    expected = {}
    for service in SERVICES:
        expected |= {
            service: 3,
            f"{service}.dead-letters": 1,
            f"{service}.dead-letters.republished": 1,
        }
    assert stack_topics(3) == expected
    assert set(SERVICES) >= {s.name for s in find_services() if "relay" in s.processes}


def procfile_entries() -> dict[str, str]:
    lines = (REPO_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_every_procfile_process_runs_a_module_that_exists() -> None:
    entries = procfile_entries()
    for name, command in entries.items():
        assert command.startswith("exec "), f"{name}: honcho must exec its command"
        match = re.search(r"(?:-m|-A) ([\w.]+)|^exec uvicorn ([\w.]+):", command)
        assert match, f"{name}: no module in {command!r}"
        module = match.group(1) or match.group(2)
        assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
    for service in SERVICES:
        assert {f"{service}-api", f"{service}-relay"} <= set(entries)
    for found in find_services():  # every process module of every service runs
        assert {f"{found.name}-{process}" for process in found.processes} <= set(entries)


def test_every_setting_the_procfile_uses_has_a_default() -> None:
    names = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", (REPO_ROOT / "Procfile").read_text()))
    assert names, "the Procfile uses no setting"
    assert names <= set(default_environment({})), names - set(default_environment({}))


def test_taken_ports_names_only_the_busy_ports_the_procfile_uses(taken_port: int) -> None:
    procfile = "a: exec serve --port $KITCHEN_API_PORT\nb: exec serve --port ${QUERY_API_PORT}\n"
    env = {
        "KITCHEN_API_PORT": str(taken_port),
        "QUERY_API_PORT": str(free_port()),
        "ORDERS_API_PORT": str(taken_port),  # busy, but the Procfile does not use it
    }
    assert taken_ports(procfile, env) == [("KITCHEN_API_PORT", str(taken_port))]


# ------------------------------------------------------------------------- cqrs run


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_runner(
    tmp_path: Path, procfile: str, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """`python -m devstack run` on free ports with a test Procfile; output to a file.

    It starts with SIGINT ignored, as a shell's background job does: Ctrl-C must work anyway.
    """
    ensure_secantus_venv()
    (tmp_path / "Procfile").write_text(procfile)
    output = tmp_path / "run.log"
    env = {
        **{name: value for name, value in os.environ.items() if name != "AUTH_JWKS_URL"},
        "KAFKA_PORT": str(free_port()),
        "MONGODB_PORT": str(free_port()),
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_ADMIN_PORT": str(free_port()),
        "PROMETHEUS_PORT": str(free_port()),
        "KAFKA_TOPIC_PARTITIONS": "2",
        **(extra_env or {}),
    }
    with open(output, "wb") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "devstack", "run", "--procfile", str(tmp_path / "Procfile")]
            + ["--var-dir", str(tmp_path / "var")],
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_ignore_sigint,  # noqa: PLW1509 - the test process has no threads of note
        )
    return runner, output


def read(path: Path) -> str:
    """A log's text, or "" while it does not exist yet."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def server_pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"ready at \S+ \(pid (\d+)\)", output)]


def stop_runner(runner: subprocess.Popen[bytes]) -> None:
    """For the test's own cleanup if an assertion failed midway: Ctrl-C, so that `cqrs
    run` stops the servers and processes it started (each in a session of its own, which
    a SIGKILL of its group would leave running); SIGKILL only if that does not end it."""
    if runner.poll() is None:
        runner.send_signal(signal.SIGINT)
        try:
            runner.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()


def test_cqrs_run_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(
        "import os, sys, time\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "print('sleeper sees', os.environ['KAFKA_BOOTSTRAP_SERVERS'], flush=True)\n"
        "print('sleeper trusts', os.environ['AUTH_JWKS_URL'], flush=True)\n"
        "time.sleep(600)\n"
    )
    pid_file = tmp_path / "sleeper.pid"
    demo = "demo: printf '\\033[1mthe demo summary\\033[0m\\n'; exec sleep 600\n"
    runner, output = start_runner(tmp_path, f"sleeper: python {sleeper} {pid_file}\n{demo}")
    sleeper_log = tmp_path / "var" / "log" / "sleeper.log"
    try:
        wait_for(
            lambda: "sleeper sees 127.0.0.1:" in read(sleeper_log) and pid_file.exists(),
            timeout=120,
            interval=0.2,
            message=f"the Procfile process did not start; output:\n{output.read_text()}",
        )
        text = output.read_text()
        assert "sleeper sees" not in text, "a process's output goes to its log, not the console"
        wait_for(lambda: "\ndemo | the demo summary\n" in output.read_text(), timeout=30)
        assert read(tmp_path / "var" / "log" / "demo.log") == "the demo summary\n"
        assert "ready in " in text and f"{sleeper_log.parent}/<process>.log" in text, text
        pids = [*server_pids(text), int(pid_file.read_text())]
        # the broker, MongoDB, the gateway, Prometheus where it is installed, the sleeper
        assert len(pids) == 4 + (prometheus_binary() is not None), text
        scrape_config = (tmp_path / "var" / "prometheus" / "prometheus.yml").read_text()
        assert 'job_name: "sleeper"' in scrape_config, scrape_config  # its HEALTH_PORT
        if prometheus_binary() is not None:
            prometheus = re.search(r"Prometheus ready at (\S+)", text)
            assert prometheus, text

            def jobs() -> set[str]:
                answer = httpx.get(f"{prometheus[1]}/api/v1/targets", timeout=5).json()
                return {t["labels"]["job"] for t in answer["data"]["activeTargets"]}

            wait_for(lambda: jobs() == {"sleeper"}, timeout=30, message=scrape_config)
        gateway = re.search(r"Envoy gateway ready at (\S+)", text)
        assert gateway, text
        assert httpx.get(f"{gateway[1]}/health", timeout=5).status_code == 200
        # The local identity is made at the first run, and the processes trust it.
        auth_dir = (tmp_path / "var" / "auth").resolve()
        assert f"sleeper trusts {(auth_dir / 'jwks.json').as_uri()}" in read(sleeper_log)
        assert (auth_dir / "signing-key.pem").stat().st_mode & 0o777 == 0o600
        topics_line = (
            f"topics {', '.join(SERVICE_TOPICS)} (2 partitions), "
            f"{', '.join(DEAD_LETTER_TOPICS)} (1) on "
        )
        assert topics_line in text, text
        assert all(pid_alive(pid) for pid in pids)
        bootstrap = re.search(r"Kafka broker \(noida-db\) ready at (\S+)", text)
        assert bootstrap, text
        on_broker = run_sync(lambda: list_topics(bootstrap[1]))
        assert set(stack_topics(2)) <= set(on_broker), on_broker
        # Each exists with its partition count (a different count raises TopicMismatch).
        run_sync(lambda: ensure_topics(bootstrap[1], stack_topics(2)))

        runner.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert runner.wait(timeout=90) == 0, output.read_text()
    finally:
        stop_runner(runner)
    text = output.read_text()
    assert "stopped Kafka broker" in text and "stopped MongoDB" in text, text
    assert "stopped Envoy gateway" in text, text
    assert ("stopped Prometheus" in text) == (prometheus_binary() is not None), text
    assert [pid for pid in pids if pid_alive(pid)] == [], text
    assert "\x1b" not in text and "error" not in text, text
    assert "sleeper.1 started" in read(tmp_path / "var" / "log" / "honcho.log")


def test_cqrs_run_exits_with_the_failing_process_code(tmp_path: Path) -> None:
    procfile = "waits: exec sleep 600\nfails: echo first; echo the-last-words; exit 3\n"
    runner, output = start_runner(tmp_path, procfile)
    try:
        code = runner.wait(timeout=120)
    finally:
        stop_runner(runner)
    text = output.read_text()
    assert code == 3, text
    log = tmp_path / "var" / "log" / "fails.log"
    assert f"error: process fails exited with code 3; the last lines of {log}:" in text, text
    assert "  the-last-words\n" in text and read(log) == "first\nthe-last-words\n", text
    assert "waits" not in text, "only the process that failed is reported"
    pids = server_pids(text)
    assert len(pids) == 3 + (prometheus_binary() is not None), text
    assert [pid for pid in pids if pid_alive(pid)] == [], text


def test_cqrs_run_refuses_a_taken_api_port_before_starting_anything(
    tmp_path: Path, taken_port: int
) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("api: exec serve --port $KITCHEN_API_PORT\n")
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "run", "--procfile", str(procfile)]
        + ["--var-dir", str(tmp_path / "var")],
        env={**os.environ, "KITCHEN_API_PORT": str(taken_port)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    expected = f"port {taken_port} is in use: stop what holds it or set KITCHEN_API_PORT"
    assert expected in result.stdout
    assert "starting" not in result.stdout  # no server was started


def test_cqrs_run_scales_an_api_out_behind_the_gateway(tmp_path: Path) -> None:
    """`<NAME>_API_PROCESSES=2`: two processes of an API, both answering through the gateway."""
    name = "query"
    line = next(
        line
        for line in (REPO_ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{name}-api:")
    )
    api = f"{name}-api"
    admin_port = free_port()
    extra = {
        f"{name.upper()}_API_PROCESSES": "2",
        f"{name.upper()}_API_PORT": str(free_port()),
        f"{name.upper()}_DATABASE_URL": f"sqlite:///{tmp_path}/{name}.db",
        "GATEWAY_ADMIN_PORT": str(admin_port),
    }
    runner, output = start_runner(tmp_path, line + "\n", extra)
    try:
        found = wait_for(
            lambda: re.search(r"Envoy gateway ready at (\S+)", output.read_text()),
            timeout=120,
            interval=0.2,
            message="the gateway did not start",
        )
        gateway = found[1]
        logs = [tmp_path / "var" / "log" / f"{process}.log" for process in (api, f"{api}-2")]
        wait_for(
            lambda: all("Application startup complete" in read(log) for log in logs),
            timeout=120,
            interval=0.2,
            message=f"the two {name}-api processes did not start",
        )

        # The gateway sends requests to a process once its /health/ready answered 200.
        def healthy() -> list[str]:
            clusters = httpx.get(f"http://127.0.0.1:{admin_port}/clusters", timeout=5).text
            flags = rf"^{name}-api::[\d.]+:\d+::health_flags::healthy$"
            return re.findall(flags, clusters, re.MULTILINE)

        wait_for(lambda: len(healthy()) == 2, timeout=30, message="never both ready")
        # At once, as load comes: Envoy's least-request balancing breaks a tie of idle
        # processes the same way each time, so one request after another may all go to one.
        with ThreadPoolExecutor(10) as pool:
            answers = list(
                pool.map(lambda _: httpx.get(f"{gateway}/{name}-api/health", timeout=5), range(40))
            )
        assert [answer.status_code for answer in answers] == [200] * 40
        wait_for(lambda: "ready in " in output.read_text(), timeout=30, message="no summary")
        text = output.read_text()
        assert re.search(rf"  {api}  http://127\.0\.0\.1:\d+/docs  \(2 processes, ports", text), (
            text
        )
        lines = (read(logs[0]) + read(logs[1])).splitlines()  # JSON lines (kernel/logs.py)
        messages = [json.loads(line)["message"] for line in lines if line.startswith("{")]
        assert any('"GET /health HTTP/1.1" 200' in message for message in messages), lines
        assert "GET /health" not in text and "Application startup" not in text, text
        assert "\x1b" not in text, text
        clusters = httpx.get(f"http://127.0.0.1:{admin_port}/clusters", timeout=5).text
        counts = re.findall(rf"^{name}-api::[\d.]+:\d+::rq_total::(\d+)$", clusters, re.MULTILINE)
        assert len(counts) == 2 and all(int(count) > 0 for count in counts), clusters
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=90) == 0, output.read_text()
    finally:
        stop_runner(runner)
