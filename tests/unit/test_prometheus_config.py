"""The Prometheus files: the generated scrape configurations (compose's and `cqrs run`'s)
and the alert rules, checked by `promtool` when it is installed (CI installs it: a
missing promtool fails there, and skips elsewhere)."""

import subprocess
from pathlib import Path

from devstack.prometheus import scrape_targets, with_health_ports
from devstack.scrape import ALERT_RULES, SCRAPE_CONFIG, compose_jobs, local_scrape_config
from devstack.services import REPO_ROOT, find_services
from tests.support import debian_tool


def check(*args: str) -> str:
    result = subprocess.run(
        [debian_tool("promtool", "prometheus"), "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_alert_rules_are_valid() -> None:
    out = check("rules", str(REPO_ROOT / ALERT_RULES))
    assert "SUCCESS" in out


def test_compose_s_scrape_config_is_valid_and_has_a_job_per_process() -> None:
    out = check("config", str(REPO_ROOT / SCRAPE_CONFIG))
    assert "1 rule files found" in out
    text = (REPO_ROOT / SCRAPE_CONFIG).read_text()
    for service in find_services():
        for process in service.processes:
            assert f'job_name: "{service.name}-{process}"' in text
    assert 'job_name: "projections"' in text and 'job_name: "query-api"' in text
    assert len(compose_jobs(find_services())) == text.count("job_name:")


PROCFILE = """\
shop-api: exec uvicorn write_side.shop.api:create_app --factory --port $SHOP_API_PORT
shop-relay: exec python -m write_side.shop.relay
shop-relay-2: exec python -m write_side.shop.relay
shop-saga: exec faust -A write_side.shop.saga:app worker --without-web
projections: exec faust -A projections.worker:app worker --without-web
demo: exec python -m shop_demo
"""


def test_the_runner_s_scrape_config_has_every_process_on_its_port(tmp_path: Path) -> None:
    text, workers = with_health_ports(PROCFILE)
    assert set(workers) == {"shop-relay", "shop-relay-2", "shop-saga", "projections"}
    ports = [port for endpoints in workers.values() for _, port in endpoints]
    assert len(set(ports)) == len(ports)
    for name, [(_, port)] in workers.items():
        assert f"{name}: export HEALTH_PORT={port}; exec " in text
    assert PROCFILE.splitlines()[0] in text.splitlines()  # an API: its own port
    assert "demo: exec python -m shop_demo" in text.splitlines()
    from devstack.gateway import Api

    targets = scrape_targets([Api("shop-api", [("127.0.0.1", 8000), ("127.0.0.1", 8100)])], workers)
    assert targets["shop-api-2"] == [("127.0.0.1", 8100)]
    config = tmp_path / "prometheus.yml"
    config.write_text(local_scrape_config(targets, REPO_ROOT))
    assert "1 rule files found" in check("config", str(config))
    written = config.read_text()
    assert 'job_name: "shop-relay-2"' in written and '"127.0.0.1:8100"' in written
    assert 'replacement: "relay"' in written and 'replacement: "shop"' in written
