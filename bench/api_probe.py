"""`python -m bench.api_probe AUTH_DIR N`: POST /orders N times to the orders command API's
app in this one process (httpx's ASGI transport: no server, no network), 32 at a time,
each with a new `Idempotency-Key` as the benchmark's load sends, after the same warm-up
every time; its settings from the environment, as the API's.

What `bench.instructions` runs under callgrind: two runs that differ only in N give the
instructions one command costs.
"""

import asyncio
import logging
import sys
import uuid
from pathlib import Path

import httpx

from bench import http as bench_http
from bench.scenarios.write_path import ORDER

CONCURRENT = 32
WARM_UP = 64


async def place_orders(count: int) -> None:
    from write_side.orders.api import create_app

    app = create_app()
    headers = bench_http.authorization()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://orders", headers=headers
        ) as client:

            async def place() -> None:
                # A new Idempotency-Key each, as the benchmark's load sends (bench.http).
                key = {"Idempotency-Key": uuid.uuid4().hex}
                answer = await client.post("/orders", json=ORDER, headers=key)
                if answer.status_code != 201:
                    raise RuntimeError(f"POST /orders: {answer.status_code} {answer.text}")

            for total in (WARM_UP, count):
                for start in range(0, total, CONCURRENT):
                    await asyncio.gather(*(place() for _ in range(min(CONCURRENT, total - start))))


def main() -> None:
    auth_dir, count = Path(sys.argv[1]), int(sys.argv[2])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    bench_http.use_local_identity(auth_dir)
    asyncio.run(place_orders(count))


if __name__ == "__main__":
    main()
