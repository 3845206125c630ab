"""Every API of the Procfile, each in a process of its own, against its own OpenAPI
document: schemathesis sends generated requests, valid and invalid, and checks that none
answers a server error, that every status and content type answered is documented;
and the docs pages load from the API itself (no CDN).

The APIs are found in the Procfile (every ``uvicorn ... --factory`` process), so the
domains ``cqrs new-domain`` adds are covered as they come.
"""

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from devstack.services import find_services
from tests import processes
from tests.api_headers import request_headers

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 40  # per operation and phase: the whole module runs in under a minute
UVICORN = re.compile(r"^(?P<name>[\w-]+):.*\buvicorn (?P<app>[\w.]+:\w+) --factory", re.MULTILINE)


def procfile_apis() -> dict[str, str]:
    """``service`` → ``module:factory`` of each API process (``orders-api`` → ``orders``)."""
    text = (REPO_ROOT / "Procfile").read_text()
    return {m["name"].removesuffix("-api"): m["app"] for m in UVICORN.finditer(text)}


APIS = procfile_apis()


@pytest.fixture(scope="module")
def urls(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, mongo_url: str
) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("apis")
    database = f"test_{uuid.uuid4().hex[:12]}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MONGODB_URL": mongo_url,
        "MONGODB_DATABASE": database,
        "READ_YOUR_WRITES_TIMEOUT": "0.2",
        **{f"{s.upper()}_DATABASE_URL": f"sqlite:///{tmp}/{s}.db" for s in APIS if s != "query"},
    }
    try:
        with processes.running_apis(APIS, env, tmp) as (found, running):
            yield found
            for process in running:
                assert "Exception in ASGI application" not in process.log(), processes.logs(process)
    finally:
        MongoClient(mongo_url).drop_database(database)


def test_the_procfile_apis_are_found() -> None:
    assert "query" in APIS
    assert {service.name for service in find_services() if service.api_port} <= set(APIS)


@pytest.mark.parametrize("service", sorted(APIS))
def test_schemathesis_finds_no_server_error_and_nothing_undocumented(
    urls: dict[str, str], service: str
) -> None:
    url = urls[service]
    headers = [f"--header={name}: {value}" for name, value in request_headers(service).items()]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--no-color",
            "run",
            f"{url}/openapi.json",
            f"--url={url}",
            "--checks=not_a_server_error,status_code_conformance,content_type_conformance",
            f"--max-examples={EXAMPLES}",
            "--phases=examples,coverage,fuzzing",
            "--mode=all",
            "--seed=14",
            "--request-timeout=10",
            "--continue-on-failure",
            *headers,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("service", sorted(APIS))
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_their_assets_from_the_api_itself(
    urls: dict[str, str], service: str, page: str
) -> None:
    with httpx.Client(base_url=urls[service], headers=request_headers(service)) as client:
        html = client.get(page)
        assert html.status_code == 200
        assert "://" not in html.text, "the page names another host"
        parser = _Assets()
        parser.feed(html.text)
        scripts = [asset for asset in parser.urls if asset.endswith(".js")]
        assert scripts, parser.urls
        for asset in [*parser.urls, "/openapi.json"]:
            assert asset.startswith("/") and not asset.startswith("//"), asset
            loaded = client.get(asset)
            assert loaded.status_code == 200, asset
            assert loaded.content, asset
