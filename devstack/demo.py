"""The `demo` process of the Procfile: the createOrder saga, once for every outcome.

1. Waits for every API's `/health` (the four command APIs and the query API), through
   the gateway when `GATEWAY_URL` is set (as `cqrs run` does), with tokens it mints
   from the local signing key: `ops` for the set-up, each restaurant's own for its menu,
   each customer's own for their orders.
2. Sets up, through the command APIs: consumers (one active, one deactivated, ...),
   their accounts (a credit limit, a small one, a blocked card) and restaurants (one
   open with a menu, one closed). Re-runs are fine: a 409 for something that exists
   already is expected.
3. Places one order per outcome of the saga: approved; rejected by the consumer check
   (unknown, deactivated); by the kitchen (closed, not on the menu); by the card (over
   the limit, blocked), whose pending ticket is then cancelled (the compensation).
   Cancelling an order while its saga runs answers 409 (the semantic lock): tried once.
4. Reads each order from the query API: first with its consistency token
   (read-your-writes), then until its status is APPROVED or REJECTED, then a little
   longer until the saga's last event is in its timeline.
5. Prints each order's outcome and timeline, and where to look next; then idles,
   because honcho stops every process as soon as one exits.

Every call carries a bearer token (the APIs refuse calls without one): the set-up an
`ops` token's, each order its customer's own (role `customer`, subject the customer
id), minted with the local keys `cqrs run` made (`devstack.identity`). With an OIDC
provider instead (compose: Keycloak) the demo sends one ops token for everything: the
one in `DEMO_ACCESS_TOKEN`, or one it gets by client credentials from `DEMO_TOKEN_URL`
with `DEMO_CLIENT_ID` and `DEMO_CLIENT_SECRET` (docs/auth.md).

Exits non-zero with a clear message if a step of the setup fails. A saga that does not
end in time is reported, not fatal: the stack keeps running so that you can look.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from devstack import traces
from devstack.identity import default_auth_dir, mint_token
from operations.text_table import table

STARTUP_TIMEOUT = float(os.environ.get("DEMO_STARTUP_TIMEOUT", "120"))
READ_TIMEOUT = float(os.environ.get("DEMO_READ_TIMEOUT", "60"))
SAGA_TIMEOUT = float(os.environ.get("DEMO_SAGA_TIMEOUT", "90"))
SETTLE_TIMEOUT = float(os.environ.get("DEMO_SETTLE_TIMEOUT", "10"))
FINAL_STATUSES = ("APPROVED", "REJECTED")

# Setup, by service. Ids are fixed, so a re-run finds them (409) and goes on.
CONSUMERS = {
    "cust-ok": "Olivia Okafor",
    "cust-gone": "Gus Gonzalez",
    "cust-broke": "Bo Brooks",
    "cust-blocked": "Blake Bloch",
}
DEACTIVATED = {"cust-gone": "closed their account"}
CREDIT_LIMITS = {"cust-ok": 100_00, "cust-broke": 5_00, "cust-blocked": 100_00}
BLOCKED = {"cust-blocked": "card reported stolen"}
OPEN_RESTAURANT = "rest-pizza"
CLOSED_RESTAURANT = "rest-curry"
RESTAURANTS = {
    OPEN_RESTAURANT: ("Pizzeria Aperta", ["pizza", "salad", "tiramisu"]),
    CLOSED_RESTAURANT: ("Curry Closed", ["curry", "naan"]),
}
APPROVED_CONSUMER = "cust-ok"  # cust-ok-2, -3, ... once its credit is used up by re-runs
PIZZA = {"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 12_50}
SALAD = {"menu_item_id": "salad", "quantity": 1, "unit_price_cents": 7_50}


@dataclass
class Scenario:
    """One order and the outcome the saga should give it."""

    title: str
    customer_id: str
    restaurant_id: str
    line_items: list[dict[str, Any]]
    expected_status: str
    expected_step: str | None = None
    ends_with: str | None = None
    """The event that ends the saga's timeline, if not the order's own last event."""
    order_id: str | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    """The Idempotency-Key its order is placed with."""
    order: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def total_cents(self) -> int:
        return sum(item["quantity"] * item["unit_price_cents"] for item in self.line_items)

    @property
    def expected(self) -> str:
        step = f" by {self.expected_step}" if self.expected_step else ""
        return f"{self.expected_status}{step}"


def scenarios(approved_consumer: str = APPROVED_CONSUMER) -> list[Scenario]:
    """The orders of one demo run, one per outcome."""
    return [
        Scenario(
            "approved",
            approved_consumer,
            OPEN_RESTAURANT,
            [PIZZA, SALAD],
            "APPROVED",
            ends_with="kitchen.TicketApproved",
        ),
        Scenario(
            "consumer unknown",
            "cust-nobody",
            OPEN_RESTAURANT,
            [PIZZA],
            "REJECTED",
            "consumers",
        ),
        Scenario(
            "consumer deactivated", "cust-gone", OPEN_RESTAURANT, [PIZZA], "REJECTED", "consumers"
        ),
        Scenario(
            "restaurant closed",
            "cust-ok",
            CLOSED_RESTAURANT,
            [{"menu_item_id": "curry", "quantity": 1, "unit_price_cents": 9_90}],
            "REJECTED",
            "kitchen",
        ),
        Scenario(
            "item not on the menu",
            "cust-ok",
            OPEN_RESTAURANT,
            [{"menu_item_id": "sushi", "quantity": 3, "unit_price_cents": 4_00}],
            "REJECTED",
            "kitchen",
        ),
        Scenario(
            "over the credit limit",
            "cust-broke",
            OPEN_RESTAURANT,
            [PIZZA],
            "REJECTED",
            "accounting",
            ends_with="kitchen.TicketCancelled",
        ),
        Scenario(
            "card blocked",
            "cust-blocked",
            OPEN_RESTAURANT,
            [PIZZA],
            "REJECTED",
            "accounting",
            ends_with="kitchen.TicketCancelled",
        ),
    ]


OPS = "demo-ops"
"""The subject of the demo's `ops` token (the set-up is an operator's work)."""


def ops() -> dict[str, str]:
    return bearer(OPS, "ops")


def restaurant(restaurant_id: str) -> dict[str, str]:
    return bearer(restaurant_id, "restaurant")


def customer(customer_id: str) -> dict[str, str]:
    return bearer(customer_id, "customer")


class DemoFailed(Exception):
    """The demo could not complete; the message says why."""


def say(message: str = "") -> None:
    """Print and flush (honcho shows lines as they come)."""
    print(message, flush=True)


# ----------------------------------------------------------------------------- HTTP


def bearer(subject: str, *roles: str) -> dict[str, str]:
    """The Authorization header of a call as `subject` with `roles` (locally), or the
    provider's one ops token."""
    token = _provider_token() or mint_token(subject, roles, 3600, auth_dir=default_auth_dir())
    return {"Authorization": f"Bearer {token}"}


_provider_tokens: list[str] = []


def _provider_token() -> str | None:
    """`DEMO_ACCESS_TOKEN`, or a token by client credentials from `DEMO_TOKEN_URL`."""
    if token := os.environ.get("DEMO_ACCESS_TOKEN"):
        return token
    url = os.environ.get("DEMO_TOKEN_URL")
    if not url:
        return None
    if not _provider_tokens:
        form = {
            "grant_type": "client_credentials",
            "client_id": os.environ.get("DEMO_CLIENT_ID", ""),
            "client_secret": os.environ.get("DEMO_CLIENT_SECRET", ""),
        }
        try:
            response = httpx.post(url, data=form, timeout=30)
            response.raise_for_status()
            _provider_tokens.append(str(response.json()["access_token"]))
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise DemoFailed(f"no token from {url}: {exc!r}") from exc
    return _provider_tokens[0]


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


def command(
    client: httpx.Client,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    accept: Sequence[int] = (200, 201),
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send a command; any status outside `accept` is a `DemoFailed`. A POST carries an
    `Idempotency-Key` (a new one unless `headers` give it): a retry would send it again."""
    if method == "POST":
        headers = {"Idempotency-Key": uuid.uuid4().hex, **(headers or {})}
    try:
        response = client.request(method, url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DemoFailed(f"{method} {url} failed: {exc!r}") from exc
    if response.status_code not in accept:
        raise DemoFailed(f"{method} {url} answered {response.status_code}: {response.text[:500]}")
    return response


def ensure(client: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    """POST `body` to `url` as ops; what exists already (409) is left as it is."""
    return command(client, "POST", url, body, (201, 409), ops())


def set_up(client: httpx.Client, consumers: str, kitchen: str, accounting: str) -> None:
    """Consumers, accounts and restaurants; what exists already (409) is left as it is."""
    for consumer_id, name in CONSUMERS.items():
        ensure(client, f"{consumers}/consumers", {"consumer_id": consumer_id, "name": name})
    for consumer_id, reason in DEACTIVATED.items():
        url = f"{consumers}/consumers/{consumer_id}/deactivate"
        command(client, "POST", url, {"reason": reason}, (200, 409), ops())
    for consumer_id, limit in CREDIT_LIMITS.items():
        body = {"consumer_id": consumer_id, "credit_limit_cents": limit}
        ensure(client, f"{accounting}/accounts", body)
    for consumer_id, reason in BLOCKED.items():
        url = f"{accounting}/accounts/{consumer_id}/block"
        command(client, "POST", url, {"reason": reason}, (200, 409), ops())
    for restaurant_id, (name, menu) in RESTAURANTS.items():
        body = {"restaurant_id": restaurant_id, "name": name, "menu": menu}
        response = ensure(client, f"{kitchen}/restaurants", body)
        if response.status_code == 409:  # left as a re-run expects it: same menu
            url = f"{kitchen}/restaurants/{restaurant_id}/menu"
            command(client, "PUT", url, {"menu": menu}, headers=restaurant(restaurant_id))
    for restaurant_id, action in ((OPEN_RESTAURANT, "open"), (CLOSED_RESTAURANT, "close")):
        url = f"{kitchen}/restaurants/{restaurant_id}/{action}"
        command(client, "POST", url, headers=restaurant(restaurant_id))
    accounts = ", ".join(
        f"{consumer_id} ({limit} cents{', card blocked' if consumer_id in BLOCKED else ''})"
        for consumer_id, limit in CREDIT_LIMITS.items()
    )
    say(
        f"demo: consumers {', '.join(CONSUMERS)} ({', '.join(DEACTIVATED)} deactivated); "
        f"accounts {accounts}; restaurants {OPEN_RESTAURANT} (open), "
        f"{CLOSED_RESTAURANT} (closed)"
    )


def consumer_with_credit(
    client: httpx.Client, consumers: str, accounting: str, amount_cents: int
) -> str:
    """`cust-ok` if its account still has `amount_cents` of credit, else the first of
    `cust-ok-2`, `cust-ok-3`, ... that has (registered with an account if new).

    Authorizations add up and the demo never releases them, so each re-run uses some
    of cust-ok's credit.
    """
    body: dict[str, Any]
    for n in range(1, 1000):
        consumer_id = APPROVED_CONSUMER if n == 1 else f"{APPROVED_CONSUMER}-{n}"
        if n > 1:
            body = {"consumer_id": consumer_id, "name": f"{CONSUMERS[APPROVED_CONSUMER]} {n}"}
            ensure(client, f"{consumers}/consumers", body)
            body = {"consumer_id": consumer_id, "credit_limit_cents": CREDIT_LIMITS["cust-ok"]}
            ensure(client, f"{accounting}/accounts", body)
        url = f"{accounting}/accounts/{consumer_id}"
        account = command(client, "GET", url, headers=ops()).json()
        if account["credit_limit_cents"] - account["authorized_total_cents"] >= amount_cents:
            if n > 1:
                say(f"demo: earlier runs used {APPROVED_CONSUMER}'s credit; using {consumer_id}")
            return consumer_id
    raise DemoFailed(f"no {APPROVED_CONSUMER}-N account with {amount_cents} cents of credit left")


DELIVERY_ADDRESS = {
    "street": "1 Main St",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "US",
}


def send_order(client: httpx.Client, orders: str, scenario: Scenario) -> httpx.Response:
    """POST the scenario's order as its customer, with the scenario's Idempotency-Key."""
    body = {
        "customer_id": scenario.customer_id,
        "restaurant_id": scenario.restaurant_id,
        "delivery_address": DELIVERY_ADDRESS,
        "line_items": scenario.line_items,
    }
    headers = {**customer(scenario.customer_id), "Idempotency-Key": scenario.key}
    return command(client, "POST", f"{orders}/orders", body, (201,), headers)


def place_order(client: httpx.Client, orders: str, scenario: Scenario) -> dict[str, Any]:
    """Place the scenario's order; return the command's answer (order_id, token, ...)."""
    accepted: dict[str, Any] = send_order(client, orders, scenario).json()
    scenario.order_id = str(accepted["order_id"])
    return accepted


def retry_order(client: httpx.Client, orders: str, scenario: Scenario) -> None:
    """Send a placed order again with its Idempotency-Key, as a client that lost the
    answer would: the same order comes back, and nothing happens twice."""
    again = send_order(client, orders, scenario)
    if again.json()["order_id"] != scenario.order_id:
        raise DemoFailed(f"a retry with the same Idempotency-Key made another order: {again.text}")
    say(
        f"demo: POST /orders sent again with its Idempotency-Key: the same order "
        f"{scenario.order_id} came back (Idempotent-Replayed: "
        f"{again.headers.get('idempotent-replayed')}), not a second one"
    )


def try_cancel(client: httpx.Client, orders: str, order_id: str, customer_id: str) -> str:
    """Cancel an order whose saga runs: the semantic lock answers 409."""
    url = f"{orders}/orders/{order_id}/cancel"
    body = {"reason": "changed my mind"}
    response = command(client, "POST", url, body, (200, 409), customer(customer_id))
    detail = response.json().get("detail", response.text) if response.content else ""
    return f"{response.status_code}: {detail}" if detail else str(response.status_code)


def get_order(
    client: httpx.Client,
    query: str,
    order_id: str,
    customer_id: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any] | str]:
    """`GET /orders/{id}` on the query API, as its customer: (status, document or error)."""
    try:
        response = client.get(
            f"{query}/orders/{order_id}", headers={**customer(customer_id), **(headers or {})}
        )
    except httpx.HTTPError as exc:
        return 0, repr(exc)
    if response.status_code == 200:
        document: dict[str, Any] = response.json()
        return 200, document
    return response.status_code, response.text[:300]


def read_your_write(
    client: httpx.Client, query: str, accepted: dict[str, Any], customer_id: str
) -> dict[str, Any]:
    """The order as soon as the read model holds the write: with its consistency token,
    retrying 503 (not caught up yet) until `READ_TIMEOUT`."""
    order_id = str(accepted["order_id"])
    headers = {"X-Consistency-Token": str(accepted["consistency_token"])}
    deadline = time.monotonic() + READ_TIMEOUT
    while True:
        status, answer = get_order(client, query, order_id, customer_id, headers)
        if status == 200 and isinstance(answer, dict):
            return answer
        if status not in (0, 503):
            raise DemoFailed(f"GET {query}/orders/{order_id} answered {status}: {answer}")
        if time.monotonic() >= deadline:
            raise DemoFailed(
                f"the query API did not show order {order_id} within {READ_TIMEOUT:.0f} s "
                f"(last: {status} {answer}); are orders-relay and projections running?"
            )
        time.sleep(0.3)


def has_event(order: dict[str, Any], name: str) -> bool:
    """True if the timeline holds the event `name` (e.g. `kitchen.TicketCancelled`)."""
    return any(
        str(entry.get("event", "")).startswith(f"{name}.") for entry in order.get("timeline") or []
    )


def follow(client: httpx.Client, query: str, scenario: Scenario, deadline: float) -> None:
    """Poll the order until its saga has ended (status, then the last timeline event)."""
    assert scenario.order_id is not None
    settle_deadline: float | None = None
    while True:
        status, answer = get_order(client, query, scenario.order_id, scenario.customer_id)
        if status == 200 and isinstance(answer, dict):
            scenario.order = answer
        final = scenario.order.get("status") in FINAL_STATUSES
        if final and settle_deadline is None:
            settle_deadline = time.monotonic() + SETTLE_TIMEOUT
        if final and (scenario.ends_with is None or has_event(scenario.order, scenario.ends_with)):
            return
        now = time.monotonic()
        if settle_deadline is not None and now >= settle_deadline:
            scenario.note = f"{scenario.ends_with} not in the timeline after {SETTLE_TIMEOUT:.0f} s"
            return
        if settle_deadline is None and now >= deadline:
            scenario.note = (
                f"saga not ended within {SAGA_TIMEOUT:.0f} s; see {query}/sagas/stuck?older_than=30"
            )
            return
        time.sleep(0.3)


# ---------------------------------------------------------------------------- output


def _time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def timeline_table(order: dict[str, Any], indent: str = "    ") -> str:
    """The order's saga events by time: time, +ms since the first, service, event, detail."""
    entries = sorted(
        order.get("timeline") or [], key=lambda e: (str(e.get("time")), e.get("event_id", ""))
    )
    if not entries:
        return f"{indent}(no timeline yet: the projection has not written one)"
    start = _time(entries[0].get("time"))
    rows = []
    for entry in entries:
        at = _time(entry.get("time"))
        shown = at.strftime("%H:%M:%S.%f")[:-3] if at else str(entry.get("time"))
        since = f"+{(at - start).total_seconds() * 1000:.0f} ms" if at and start else None
        rows.append([shown, since, entry.get("service"), entry.get("event"), entry.get("detail")])
    return table(["time", "since", "service", "event", "detail"], rows, indent)


def outcome(scenario: Scenario) -> tuple[str, str | None, str | None, str | None]:
    """(status, failed step, reason, ticket) of the order as the query API showed it."""
    order = scenario.order
    saga = order.get("saga") or {}
    status = order.get("status", "not read")
    step = order.get("failed_step") or saga.get("failed_step")
    reason = order.get("rejection_reason") or saga.get("reason")
    return status, step, reason, saga.get("ticket")


def matches(scenario: Scenario) -> bool:
    status, step, _, _ = outcome(scenario)
    return status == scenario.expected_status and step == scenario.expected_step


def report(runs: Sequence[Scenario], lock_answer: str | None) -> None:
    say()
    say("The createOrder saga, one order per outcome (as the query API shows them):")
    say()
    rows = []
    for number, scenario in enumerate(runs, 1):
        status, step, reason, ticket = outcome(scenario)
        mark = "ok" if matches(scenario) else f"EXPECTED {scenario.expected}"
        rows.append([number, scenario.title, scenario.order_id, status, step, ticket, mark])
    say(table(["#", "scenario", "order", "status", "failed step", "ticket", "check"], rows))
    for number, scenario in enumerate(runs, 1):
        status, step, reason, ticket = outcome(scenario)
        say()
        say(
            f"{number}. {scenario.title}: order {scenario.order_id}, customer "
            f"{scenario.customer_id} at {scenario.restaurant_id}, {scenario.total_cents} cents"
        )
        ending = f"{status}" + (f" at step {step}: {reason}" if step else "")
        say(f"   outcome: {ending}" + (f"   ({scenario.note})" if scenario.note else ""))
        say(timeline_table(scenario.order, indent="   "))
    if lock_answer is not None:
        say()
        say(
            f"Semantic lock: cancelling order {len(runs)} ({runs[-1].title}) right after "
            f"placing it answered {lock_answer}"
        )
    differ = [scenario.title for scenario in runs if not matches(scenario)]
    say()
    if differ:
        say(f"Outcomes that differ from the expected one: {', '.join(differ)}")
    else:
        say(f"All {len(runs)} orders ended as expected.")


def main() -> int:
    """Run the demo, print the result, then idle until stopped."""
    signal.signal(signal.SIGTERM, _exit_quietly)
    urls = api_urls(os.environ)
    try:
        runs, lock_answer = demo(urls)
    except DemoFailed as exc:
        say(f"DEMO FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
    report(runs, lock_answer)
    show_trace(runs[0], os.environ)
    query = urls["query"]
    say()
    auth = '-H "Authorization: Bearer $TOKEN"'
    say("Watch one saga (every API route needs a token, docs/auth.md):")
    say(f"  TOKEN=$(.venv/bin/cqrs token --sub {APPROVED_CONSUMER} --role customer)")
    say(f"  curl -s {auth} {query}/orders/<order_id>/timeline")
    say("  TOKEN=$(.venv/bin/cqrs token --sub me --role ops)")
    say(f"  curl -s {auth} '{query}/sagas/stuck?older_than=30'     sagas pending for over 30 s")
    say()
    width = max(len(name) for name in urls)
    for name, url in urls.items():
        kind = "query API (read side)" if name == "query" else "command API"
        say(f"{name.ljust(width)}  {url}   OpenAPI: {url}/docs   {kind}")
    say()
    say("Press Ctrl-C to stop everything.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


TRACE_WAIT = 15.0
"""Seconds the demo waits for an order's trace to be exported whole."""


def show_trace(scenario: Scenario, env: Mapping[str, str]) -> None:
    """Print the order's trace as `cqrs trace` does, when the processes write their spans
    under TRACES_DIR (the local stack); else say where to look (Jaeger, in compose)."""
    if "otlp_json_file" not in env.get("OTEL_TRACES_EXPORTER", "") or not scenario.order_id:
        if "otlp" in env.get("OTEL_TRACES_EXPORTER", ""):
            say()
            say("Its trace: in Jaeger's UI (http://localhost:16686), service orders-api.")
        return
    found = traces.find_trace(
        Path(env.get("TRACES_DIR") or traces.DEFAULT_DIR), scenario.order_id, wait=TRACE_WAIT
    )
    say()
    if found is None:
        say(f"No trace of order {scenario.order_id} yet; try: cqrs trace {scenario.order_id}")
        return
    say(
        f"Order {scenario.order_id}, {scenario.title}, as one trace (cqrs trace {scenario.order_id}):"
    )
    for line in traces.render(found):
        say(f"  {line}")


def api_urls(env: Mapping[str, str]) -> dict[str, str]:
    """Each API's base URL: `GATEWAY_URL/<name>-api` through the gateway, else its own."""
    gateway = env.get("GATEWAY_URL", "").rstrip("/")
    return {
        name: f"{gateway}/{name}-api"
        if gateway
        else env.get(f"{name.upper()}_API_URL", f"http://127.0.0.1:{port}").rstrip("/")
        for name, port in (
            ("orders", 8000),
            ("query", 8001),
            ("consumers", 8002),
            ("kitchen", 8003),
            ("accounting", 8004),
        )
    }


def demo(urls: dict[str, str]) -> tuple[list[Scenario], str | None]:
    """Set up, place every scenario's order, follow each saga to its end."""
    with httpx.Client(timeout=10.0, headers=ops()) as client:
        say(f"demo: waiting for {', '.join(urls.values())} ...")
        for url in urls.values():
            wait_healthy(client, url, STARTUP_TIMEOUT)
        set_up(client, urls["consumers"], urls["kitchen"], urls["accounting"])
        approved = scenarios()[0]
        customer = consumer_with_credit(
            client, urls["consumers"], urls["accounting"], approved.total_cents
        )
        runs = scenarios(customer)
        accepted = [place_order(client, urls["orders"], scenario) for scenario in runs]
        retry_order(client, urls["orders"], runs[0])
        lock_answer = try_cancel(
            client, urls["orders"], str(accepted[-1]["order_id"]), runs[-1].customer_id
        )
        say(f"demo: placed {len(runs)} orders; following their sagas in the query API ...")
        for scenario, answer in zip(runs, accepted, strict=True):
            scenario.order = read_your_write(client, urls["query"], answer, scenario.customer_id)
        deadline = time.monotonic() + SAGA_TIMEOUT
        for scenario in runs:
            follow(client, urls["query"], scenario, deadline)
    return runs, lock_answer


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
