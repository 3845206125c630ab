"""A stand-in for an OpenTelemetry collector: takes OTLP/HTTP exports and keeps nothing.

The tracing scenario measures what exporting spans as OTLP (production's exporter, ADR
32) costs the process that exports them; this machine has no collector (otelcol and
Jaeger ship from GitHub releases). It answers each ``POST /v1/traces`` with 200 and an
empty body, which the OTLP exporter takes as success, and ``GET /health`` with how many
exports and bytes it took, so a run can check that spans did arrive.

Run: ``python -m bench.otlp_receiver PORT`` (127.0.0.1 only).
"""

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench import stack
from devstack import processes
from devstack.servers import free_port

TRACES_PATH = "/v1/traces"
received = {"exports": 0, "bytes": 0}


async def take_export(request: Request) -> Response:
    received["exports"] += 1
    received["bytes"] += len(await request.body())
    return Response(status_code=200, media_type="application/x-protobuf")


async def health(request: Request) -> JSONResponse:
    return JSONResponse(received)


app = Starlette(
    routes=[
        Route(TRACES_PATH, take_export, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
)


@contextlib.contextmanager
def running(log_dir: Path) -> Iterator[str]:
    """A receiver in its own process while the block runs; yields its base URL (what
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with stack.System({}, log_dir) as system:
        system.start(
            processes.Process(
                "otlp-receiver",
                processes.python_module("bench.otlp_receiver", str(port)),
                {},
                log_dir,
            )
        )
        system.wait_healthy(url, timeout=30)
        yield url


def exports(url: str) -> int:
    """How many exports the receiver at ``url`` has taken."""
    counts: dict[str, int] = httpx.get(f"{url}/health", timeout=5).json()
    return counts["exports"]


def main() -> None:
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
