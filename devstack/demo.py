"""The `demo` process of the Procfile: place a few orders, read them back, then idle.

Waits for both APIs, places 3 orders through the command API, reads each back from the
query API with its consistency token (read-your-writes), prints them and where to look
next. It then keeps running, because honcho stops every process when one exits.
Exits non-zero with a clear message if anything fails.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import Any

import httpx

STARTUP_TIMEOUT = float(os.environ.get("DEMO_STARTUP_TIMEOUT", "120"))
READ_TIMEOUT = float(os.environ.get("DEMO_READ_TIMEOUT", "60"))
DEMO_ORDER: dict[str, Any] = {
    "customer_id": "cust-1",
    "restaurant_id": "rest-1",
    "delivery_address": "1 Main St",
    "line_items": [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}],
}
COLUMNS = ("order_id", "status", "customer_id", "restaurant_id", "total_cents", "version")


class DemoFailed(Exception):
    """The demo could not complete; the message says why."""


def say(message: str = "") -> None:
    """Print and flush (honcho shows lines as they come)."""
    print(message, flush=True)


def wait_healthy(client: httpx.Client, url: str, timeout: float) -> None:
    """Poll `GET url/health` until it answers 200, or raise `DemoFailed` at the deadline."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            response = client.get(f"{url}/health")
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise DemoFailed(f"{url}/health did not answer 200 within {timeout:.0f} s ({last})")


def place_order(client: httpx.Client, orders_api: str) -> dict[str, Any]:
    """POST one demo order; return the command's answer (order_id, consistency_token, ...)."""
    response = client.post(f"{orders_api}/orders", json=DEMO_ORDER)
    if response.status_code != 201:
        raise DemoFailed(
            f"POST {orders_api}/orders answered {response.status_code}: {response.text[:500]}"
        )
    accepted: dict[str, Any] = response.json()
    return accepted


def read_order(client: httpx.Client, query_api: str, accepted: dict[str, Any]) -> dict[str, Any]:
    """GET the order from the query API with its consistency token; retry 503 until a deadline."""
    url = f"{query_api}/orders/{accepted['order_id']}"
    headers = {"X-Consistency-Token": str(accepted["consistency_token"])}
    deadline = time.monotonic() + READ_TIMEOUT
    while True:
        try:
            response = client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            last = repr(exc)
        else:
            if response.status_code == 200:
                order: dict[str, Any] = response.json()
                return order
            if response.status_code != 503:
                raise DemoFailed(
                    f"GET {url} answered {response.status_code}: {response.text[:500]}"
                )
            last = f"503: {response.text[:200]}"
        if time.monotonic() >= deadline:
            raise DemoFailed(
                f"the query API did not show order {accepted['order_id']} within "
                f"{READ_TIMEOUT:.0f} s (last: {last}); are the relay and projections running?"
            )
        time.sleep(0.5)


def table(rows: list[dict[str, Any]]) -> str:
    """A plain text table of `COLUMNS`."""
    cells = [[str(row.get(column, "-")) for column in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def demo(orders_api: str, query_api: str, count: int = 3) -> list[dict[str, Any]]:
    """Place `count` orders and read each back; return the query API's documents."""
    with httpx.Client(timeout=10.0) as client:
        say(f"demo: waiting for {orders_api} and {query_api} ...")
        wait_healthy(client, orders_api, STARTUP_TIMEOUT)
        wait_healthy(client, query_api, STARTUP_TIMEOUT)
        accepted = [place_order(client, orders_api) for _ in range(count)]
        say(f"demo: placed {count} orders; reading them back from the query API ...")
        return [read_order(client, query_api, answer) for answer in accepted]


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> int:
    """Run the demo, print the result, then idle until stopped."""
    signal.signal(signal.SIGTERM, _exit_quietly)
    orders_api = os.environ.get("ORDERS_API_URL", "http://127.0.0.1:8000").rstrip("/")
    query_api = os.environ.get("QUERY_API_URL", "http://127.0.0.1:8001").rstrip("/")
    try:
        orders = demo(orders_api, query_api)
    except DemoFailed as exc:
        say(f"DEMO FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
    say()
    say("Orders as the query API shows them:")
    say(table(orders))
    say()
    say(f"Command API (write side): {orders_api}   OpenAPI page: {orders_api}/docs")
    say(f"Query API (read side):    {query_api}   OpenAPI page: {query_api}/docs")
    say()
    say("Press Ctrl-C to stop everything.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
