"""`cqrs run`: the whole local stack in one command (what `make run` calls).

1. make sure SecantusDB's own venv exists, and the local signing keys (var/auth/, made
   at the first run; every API trusts their JWKS, `cqrs token` signs with them);
2. start the Kafka-compatible broker and the MongoDB-compatible server (data in var/);
3. create every service's topic and its dead-letter topic;
4. make the local signing key (var/auth) and start the Envoy gateway, its configuration
   generated from the Procfile's APIs (`devstack/gateway.py`);
5. run honcho on the Procfile, with `<NAME>_API_PROCESSES` processes of each API (scale-out:
   the others on free ports, all behind the gateway), and `RELAY_PROCESSES` (2) of each
   relay (one leads, the others stand by), the settings exported, each process's output
   to `var/log/<process>.log` (`devstack/console.py`);
   each relay and Faust worker with a `HEALTH_PORT` of its own (its /metrics and health);
   when Debian's `prometheus` is installed, Prometheus scraping them all
   (`devstack/prometheus.py`, on `PROMETHEUS_PORT`, 9090);
6. once every API answers, print the addresses; show the demo's summary, and any process
   that exits with its code and the last lines of its log;
7. on Ctrl-C / SIGTERM, or when honcho exits, stop honcho, then the servers, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any

from aiokafka.errors import KafkaError

from contracts.registry import SERVICE_CONTRACTS
from devstack.console import HonchoOutput, with_log_files
from devstack.gateway import (
    PROCFILE_API,
    Api,
    Gateway,
    GatewaySettings,
    discover_apis,
    envoy_config,
    processes_var,
    write_config,
)
from devstack.identity import ensure_keys, jwks_url
from devstack.prometheus import (
    Prometheus,
    prometheus_binary,
    scrape_targets,
    with_health_ports,
)
from devstack.prometheus import write_config as write_scrape_config
from devstack.servers import (
    REPO_ROOT,
    KafkaBroker,
    ManagedServer,
    MongoServer,
    ServerError,
    ensure_secantus_venv,
    free_port,
    port_is_free,
    run_sync,
)
from devstack.services import api_ports
from kernel.dead_letters import records_topic
from kernel.kafka import TopicMismatch, ensure_topics
from kernel.messaging import dead_letter_topic

SERVICE_TOPICS = tuple(contract.TOPIC for contract in SERVICE_CONTRACTS)
SERVICES = SERVICE_TOPICS
"""Every service of contracts.registry; each publishes to the topic of its name."""
DEAD_LETTER_TOPICS = tuple(dead_letter_topic(topic) for topic in SERVICE_TOPICS)
REPUBLISHED_TOPICS = tuple(records_topic(topic) for topic in DEAD_LETTER_TOPICS)
"""Where `cqrs dead-letters republish` records what it sent back (ADR 12)."""
API_PORTS = {name: str(port) for name, port in api_ports().items()}
"""Each HTTP process's port; `<NAME>_API_URL` follows it."""
DEFAULT_VAR_DIR = REPO_ROOT / "var"
HONCHO_STOP_TIMEOUT = 20.0  # honcho itself SIGKILLs its processes 5 s after SIGTERM
READY_TIMEOUT = 120.0  # seconds for every API to accept connections before the summary


def default_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings every process reads (same names as in docker-compose.yml).

    Addresses follow `KAFKA_PORT`, `MONGODB_PORT` and the `*_API_PORT`s of `API_PORTS`
    when those are set in `env` (default: `os.environ`).
    """
    env = os.environ if env is None else env
    kafka_port = env.get("KAFKA_PORT", "9092")
    mongo_port = env.get("MONGODB_PORT", "27017")
    defaults = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "KAFKA_TOPIC_PARTITIONS": "4",
        "MONGODB_URL": f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true",
        "MONGODB_DATABASE": "read_models",
        # The local broker answers empty fetches at once: consumers pause after one, and
        # relays wake idle consumers through this folder (docs/adr/0019, 0022). Not set
        # with Kafka (compose).
        "KAFKA_EMPTY_FETCH_INTERVAL": "0.01",
        "KAFKA_FETCH_WAKEUP_DIR": "var/kafka-wakeups",
        # The one entry point (docs/gateway.md); its admin interface on 127.0.0.1 only.
        "GATEWAY_PORT": env.get("GATEWAY_PORT", "8080"),
        "GATEWAY_ADMIN_PORT": env.get("GATEWAY_ADMIN_PORT", "9901"),
        # Relays per service: one leads, the others stand by (docs/adr/0029).
        "RELAY_PROCESSES": "2",
        # Spans as OTLP JSON lines under var/traces/, exported twice a second: what
        # `cqrs trace` reads (docs/observability.md). Compose exports OTLP to Jaeger.
        "OTEL_TRACES_EXPORTER": "otlp_json_file",
        "TRACES_DIR": "var/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }
    defaults["GATEWAY_URL"] = f"http://127.0.0.1:{defaults['GATEWAY_PORT']}"
    for service in SERVICES:
        defaults[f"{service.upper()}_DATABASE_URL"] = f"sqlite:///var/{service}.db"
    for port_name, default_port in API_PORTS.items():
        port = env.get(port_name, default_port)
        defaults[port_name] = port
        defaults[port_name.replace("_PORT", "_URL")] = f"http://127.0.0.1:{port}"
    return defaults


def apply_defaults(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Fill in `default_environment()`; values already in `env` win."""
    for name, value in default_environment(env).items():
        env.setdefault(name, value)
    return env


def say(message: str) -> None:
    """Print a runner message, told apart from honcho's output.

    Never raises: when the terminal or a `| tee` is gone (Ctrl-C kills it first), the
    runner must still stop everything it started.
    """
    with contextlib.suppress(OSError, ValueError):
        print(f"devstack | {message}", flush=True)


def echo(line: str) -> None:
    """Print a process's line as it is (the demo's), never raising (see `say`)."""
    with contextlib.suppress(OSError, ValueError):
        print(line, flush=True)


class _StopRequested(Exception):
    """SIGTERM or SIGHUP arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested(signal.Signals(signum).name)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While shutting down, a second Ctrl-C must not cut the shutdown short."""
    names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in names}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _become_subreaper() -> None:
    """Orphans of honcho's processes are re-parented to us, so none can be missed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _child_pids() -> list[int]:
    """Live processes whose parent is this process, from /proc; zombies are reaped."""
    me = os.getpid()
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) != me:
            continue
        if fields[0] == "Z":
            _reap(int(entry.name))
        else:
            children.append(int(entry.name))
    return children


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _stop_leftovers(timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, any child left (orphans re-parented to us); by PID."""
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while pids := _child_pids():
        if time.monotonic() >= deadline:
            if sig == signal.SIGKILL:
                say(f"could not stop pids {pids}")
                return
            sig, deadline = signal.SIGKILL, time.monotonic() + 5
        for pid in pids:
            say(f"stopping leftover process {pid} ({sig.name})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.5)
        for pid in pids:
            _reap(pid)


def _stop_honcho(honcho: subprocess.Popen[bytes]) -> int:
    """SIGTERM honcho's process group (honcho then stops its processes); SIGKILL if stuck."""
    if honcho.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=HONCHO_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"honcho (pid {honcho.pid}) did not stop: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    return honcho.returncode


def _start(server: ManagedServer, what: str, stack: contextlib.ExitStack) -> None:
    say(f"starting {what} on port {server.port} (log {server.log_path})")
    server.start()
    stack.callback(_stop_server, server, what)
    say(f"{what} ready at {server.url} (pid {server.pid})")


def _stop_server(server: ManagedServer, what: str) -> None:
    pid = server.pid
    code = server.stop()
    say(f"stopped {what} (pid {pid}, exit code {code})")


def stack_topics(partitions: int) -> dict[str, int]:
    """Every service's topic with `partitions`; its dead-letter topic and the record of
    re-published dead letters with 1."""
    topics = dict.fromkeys(SERVICE_TOPICS, partitions)
    topics.update(dict.fromkeys(DEAD_LETTER_TOPICS, 1))
    topics.update(dict.fromkeys(REPUBLISHED_TOPICS, 1))
    return topics


def create_stack_topics(bootstrap: str, partitions: int, timeout: float = 30.0) -> None:
    """Create the topics of `stack_topics(partitions)` that are missing.

    Retries until `timeout` while the broker does not answer yet; a topic that exists
    with another partition count is an error (`TopicMismatch`), not retried.
    """
    topics = stack_topics(partitions)
    deadline = time.monotonic() + timeout
    while True:
        try:
            run_sync(lambda: ensure_topics(bootstrap, topics))
            break
        except (KafkaError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise ServerError(f"could not create topics on {bootstrap}: {exc!r}") from exc
            time.sleep(1)
    say(
        f"topics {', '.join(SERVICE_TOPICS)} ({partitions} partitions), "
        f"{', '.join(DEAD_LETTER_TOPICS)} (1) on {bootstrap}, "
        "and their <dead-letter topic>.republished records (1)"
    )


def taken_ports(procfile_text: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The `(name, port)` of each `$..._PORT` the Procfile uses whose port is not free.

    Checked before anything starts, so a busy port is one clear line, not a process
    that dies among the others' output.
    """
    names = dict.fromkeys(re.findall(r"\$\{?([A-Z][A-Z0-9_]*_PORT)\b", procfile_text))
    taken = []
    for name in names:
        port = env.get(name, "")
        if port.isdigit() and not port_is_free(int(port)):
            taken.append((name, port))
    return taken


def scale_out(procfile_text: str, env: Mapping[str, str]) -> tuple[str, dict[str, list[int]]]:
    """The Procfile with `<NAME>_API_PROCESSES` processes of each API, and their ports.

    The first process keeps its name and `<NAME>_API_PORT`; the others are
    `<name>-2`, `<name>-3`, ... on free ports, which `extra[name]` lists (the gateway
    balances over all of them). Raises ValueError for a count that is not a positive number.
    """
    extra: dict[str, list[int]] = {}
    taken: set[int] = set()
    lines = []
    for line in procfile_text.splitlines():
        lines.append(line)
        match = PROCFILE_API.match(line)
        if match is None:
            continue
        name, port_var = match["name"], match["port_var"]
        setting = processes_var(port_var)
        count = int(env.get(setting) or "1")
        if count < 1:
            raise ValueError(f"{setting}={count}: at least 1")
        command = line.split(":", 1)[1]
        for number in range(2, count + 1):
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            extra.setdefault(name, []).append(port)
            pattern = rf"\$\{{?{port_var}\b\}}?"
            lines.append(f"{name}-{number}:{re.sub(pattern, str(port), command)}")
    return "\n".join(lines) + "\n", extra


PROCFILE_RELAY = re.compile(r"^(?P<name>[\w.-]+-relay):(?P<command>.*)$")


def add_standby_relays(procfile_text: str, env: Mapping[str, str]) -> str:
    """The Procfile with `RELAY_PROCESSES` processes of each relay (`<name>-relay`): the
    others are `<name>-relay-2`, ... with the same command; one leads, the others wait
    to take over (docs/adr/0029). Raises ValueError for a count that is not positive."""
    count = int(env.get("RELAY_PROCESSES") or "1")
    if count < 1:
        raise ValueError(f"RELAY_PROCESSES={count}: at least 1")
    lines = []
    for line in procfile_text.splitlines():
        lines.append(line)
        if match := PROCFILE_RELAY.match(line):
            lines += [f"{match['name']}-{n}:{match['command']}" for n in range(2, count + 1)]
    return "\n".join(lines) + "\n"


def gateway_ports_taken(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The gateway's ports that are not free, as `taken_ports` names them."""
    names = ("GATEWAY_PORT", "GATEWAY_ADMIN_PORT")
    return [(n, env[n]) for n in names if env[n].isdigit() and not port_is_free(int(env[n]))]


def start_gateway(
    apis: list[Api], env: MutableMapping[str, str], var_dir: Path, stack: contextlib.ExitStack
) -> Gateway:
    """Envoy in front of every API process of the Procfile."""
    settings = GatewaySettings(**_gateway_overrides(env))
    gateway_dir, access_log = var_dir / "gateway", var_dir / "log" / "gateway-access.log"
    access_log.parent.mkdir(parents=True, exist_ok=True)
    config = envoy_config(apis, settings, access_log_path=str(access_log))
    gateway = Gateway(gateway_dir, write_config(config, gateway_dir / "envoy.json"), settings)
    _start(gateway, "Envoy gateway", stack)
    return gateway


def start_prometheus(
    targets: dict[str, list[tuple[str, int]]],
    env: Mapping[str, str],
    var_dir: Path,
    stack: contextlib.ExitStack,
) -> Prometheus | None:
    """Prometheus scraping every process, if it is installed (docs/metrics.md)."""
    config = write_scrape_config(targets, var_dir / "prometheus")
    if prometheus_binary() is None:
        say(f"no prometheus installed (apt-get install prometheus): scrape config {config}")
        return None
    port = int(env.get("PROMETHEUS_PORT", "9090"))
    if not port_is_free(port):
        say(f"port {port} is in use: Prometheus not started (set PROMETHEUS_PORT)")
        return None
    server = Prometheus(var_dir / "prometheus", config, port)
    _start(server, "Prometheus", stack)
    return server


def wait_until_ready(apis: list[Api], honcho: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether every API process accepts connections before ``timeout`` (False as soon
    as honcho exits: a process died)."""
    deadline = time.monotonic() + timeout
    waiting = [port for api in apis for _, port in api.endpoints]
    while waiting:
        if honcho.poll() is not None or time.monotonic() > deadline:
            return False
        waiting = [port for port in waiting if port_is_free(port)]
        if waiting:
            time.sleep(0.2)
    return True


def summary(gateway: Gateway, apis: list[Api], log_dir: Path, seconds: float) -> list[str]:
    """The console's lines once the stack is up: where everything is."""
    width = max([len("gateway"), *(len(api.name) for api in apis)])
    lines = [
        f"ready in {seconds:.0f} s; each process's log: {log_dir}/<process>.log",
        f"  {'gateway'.ljust(width)}  {gateway.url}  (every API at /<api>/...; docs/gateway.md)",
    ]
    for api in apis:
        host, port = api.endpoints[0]
        line = f"  {api.name.ljust(width)}  http://{host}:{port}/docs"
        if len(api.endpoints) > 1:
            ports = ", ".join(str(p) for _, p in api.endpoints)
            line += f"  ({len(api.endpoints)} processes, ports {ports})"
        lines.append(line)
    lines += [
        "every API route needs a token (docs/auth.md), e.g. a customer's:",
        "  TOKEN=$(.venv/bin/cqrs token --sub cust-ok --role customer)",
        "Ctrl-C stops everything.",
    ]
    return lines


def _gateway_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The gateway's settings from the runner's environment (not only os.environ)."""
    fields = GatewaySettings.model_fields
    values: dict[str, Any] = {}
    for name, info in fields.items():
        key = info.validation_alias if isinstance(info.validation_alias, str) else None
        key = key or f"GATEWAY_{name.upper()}"
        if key in env:
            values[name] = env[key]
    return values


def run(procfile: Path | str | None = None, var_dir: Path | str | None = None) -> int:
    """Run the local stack until Ctrl-C, SIGTERM or honcho's exit; return the exit code.

    `procfile` defaults to `$PROCFILE` or `<repo>/Procfile`; `var_dir` (server data) to
    `$DEVSTACK_VAR_DIR` or `<repo>/var`.
    """
    procfile = Path(procfile or os.environ.get("PROCFILE") or REPO_ROOT / "Procfile").resolve()
    var_dir = Path(var_dir or os.environ.get("DEVSTACK_VAR_DIR") or DEFAULT_VAR_DIR).resolve()
    if not procfile.is_file():
        say(f"error: no Procfile at {procfile}")
        return 2
    env = apply_defaults(dict(os.environ))
    # The Procfile's `python`, `uvicorn` and `faust` are this venv's, activated or not.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    try:
        kafka_port = int(env.get("KAFKA_PORT", "9092"))
        mongo_port = int(env.get("MONGODB_PORT", "27017"))
        partitions = int(env["KAFKA_TOPIC_PARTITIONS"])
    except ValueError as exc:
        say(f"error: bad port or partition count in the environment: {exc}")
        return 2
    procfile_text = procfile.read_text()
    if taken := taken_ports(procfile_text, env) + gateway_ports_taken(env):
        for name, port in taken:
            say(f"error: port {port} is in use: stop what holds it or set {name}")
        return 2
    (REPO_ROOT / "var").mkdir(exist_ok=True)  # for the default sqlite:///var/<service>.db
    var_dir.mkdir(parents=True, exist_ok=True)
    # The APIs verify tokens against these keys; the demo and `cqrs token` sign with them.
    env["DEVSTACK_VAR_DIR"] = str(var_dir)
    if "TRACES_DIR" not in os.environ:  # the spans beside the logs, where `cqrs trace` looks
        env["TRACES_DIR"] = str(var_dir / "traces")
    auth_dir = var_dir / "auth"
    try:
        ensure_keys(auth_dir)
    except (OSError, ValueError, TypeError) as exc:
        say(f"error: could not make the signing keys in {auth_dir}: {exc}")
        return 1
    env.setdefault("AUTH_JWKS_URL", jwks_url(auth_dir))
    say(f"signing keys in {auth_dir}; a token: cqrs token --sub cust-ok --role customer")

    _become_subreaper()
    # SIGINT too: a runner started in the background inherits it ignored.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_stop),
        signal.SIGHUP: signal.signal(signal.SIGHUP, _raise_stop),
    }
    honcho: subprocess.Popen[bytes] | None = None
    output: HonchoOutput | None = None
    log_dir = var_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    code = 0
    with contextlib.ExitStack() as stack:
        try:
            ensure_secantus_venv()
            _start(KafkaBroker(var_dir / "kafka", kafka_port), "Kafka broker (noida-db)", stack)
            _start(MongoServer(var_dir / "mongo", mongo_port), "MongoDB (SecantusDB)", stack)
            create_stack_topics(f"127.0.0.1:{kafka_port}", partitions)
            scaled_text, extra_ports = scale_out(procfile_text, env)
            apis = discover_apis(procfile_text, env, extra_ports=extra_ports)
            gateway = start_gateway(apis, env, var_dir, stack)
            procfile = var_dir / "Procfile.run"
            run_text, workers = with_health_ports(add_standby_relays(scaled_text, env))
            procfile.write_text(with_log_files(run_text, log_dir))
            start_prometheus(scrape_targets(apis, workers), env, var_dir, stack)
            say(f"starting the Procfile's processes (honcho -f {procfile}); logs in {log_dir}")
            started = time.monotonic()
            honcho = subprocess.Popen(
                [sys.executable, "-m", "honcho", "start", "--no-colour"]
                + ["-f", str(procfile), "-d", str(REPO_ROOT)],
                env=env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            assert honcho.stdout is not None
            output = HonchoOutput(honcho.stdout, log_dir, say, echo).start()
            if wait_until_ready(apis, honcho, READY_TIMEOUT):
                for line in summary(gateway, apis, log_dir, time.monotonic() - started):
                    say(line)
            elif honcho.poll() is None:
                say(f"not every API answered within {READY_TIMEOUT:.0f} s: see {log_dir}")
            code = honcho.wait()
            output.join()
            say(f"the processes stopped (exit code {code}); stopping everything")
        except (KeyboardInterrupt, _StopRequested) as exc:
            say(f"{str(exc) or 'Ctrl-C'} received: stopping everything")
        except (
            ServerError,
            TopicMismatch,
            OSError,
            ValueError,
            subprocess.CalledProcessError,
        ) as exc:
            say(f"error: {exc}")
            code = 1
        finally:
            with _signals_ignored():
                try:
                    if output is not None:
                        output.stopping()  # exits from now on are ours, not failures
                    if honcho is not None:
                        _stop_honcho(honcho)
                        if output is not None:
                            output.join()
                finally:
                    try:
                        stack.close()  # the servers, in reverse order
                    finally:
                        _stop_leftovers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `run`, `secantus` and `topics` to the `cqrs` command line."""
    parser = subparsers.add_parser(
        "run", help="run the local stack: broker, MongoDB, every process of the Procfile"
    )
    parser.add_argument("--procfile", type=Path, help="default: $PROCFILE or ./Procfile")
    parser.add_argument(
        "--var-dir", type=Path, help="server data; default: $DEVSTACK_VAR_DIR or var/"
    )
    parser.set_defaults(handler=lambda args: run(args.procfile, args.var_dir))

    parser = subparsers.add_parser(
        "secantus", help="install SecantusDB into .venv-secantus if it is missing"
    )
    parser.set_defaults(handler=_secantus_command)

    parser = subparsers.add_parser(
        "topics",
        help="create the topics on $KAFKA_BOOTSTRAP_SERVERS ($KAFKA_TOPIC_PARTITIONS partitions)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the broker"
    )
    parser.set_defaults(handler=_topics_command)


def _secantus_command(args: argparse.Namespace) -> int:
    ensure_secantus_venv()
    return 0


def _topics_command(args: argparse.Namespace) -> int:
    env = apply_defaults(dict(os.environ))
    try:
        create_stack_topics(
            env["KAFKA_BOOTSTRAP_SERVERS"], int(env["KAFKA_TOPIC_PARTITIONS"]), args.timeout
        )
    except (ServerError, TopicMismatch) as exc:
        say(f"error: {exc}")
        return 1
    return 0
