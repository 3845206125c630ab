"""The orders of a round: every outcome of the createOrder saga (devstack/demo.py's), each
order's outcome dictated by its inputs alone, placed at a fixed rate by a client that
retries with the same `Idempotency-Key` until it is answered.

Outcomes do not depend on the order the saga handles orders in: approved orders are
placed by consumers whose credit limit no round can reach, and the card refusals come
from a limit below any one order or a blocked card.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

PIZZA = {"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 12_50}
SUSHI = {"menu_item_id": "sushi", "quantity": 1, "unit_price_cents": 9_00}
MENU = ["pizza", "salad"]
RICH_CONSUMERS = 5
UNREACHABLE_LIMIT = 1_000_000_000  # the API's maximum: 400,000 pizzas
BELOW_ANY_ORDER = 1_00
REQUEST_TIMEOUT = 10.0  # seconds; a request unanswered by then is sent again


@dataclass(frozen=True)
class Outcome:
    """Where an order's saga must end: in the orders store and read model, the kitchen's
    ticket and the accounting's authorization (None: there must be none)."""

    status: str
    failed_step: str | None
    ticket: str | None
    authorization: str | None


APPROVED = Outcome("APPROVED", None, "AWAITING_ACCEPTANCE", "AUTHORIZED")
REJECTED_BY_CONSUMERS = Outcome("REJECTED", "consumers", None, None)
REJECTED_BY_KITCHEN = Outcome("REJECTED", "kitchen", "REJECTED", None)
REJECTED_BY_CARD = Outcome("REJECTED", "accounting", "CANCELLED", "FAILED")


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int
    outcome: Outcome


KINDS = (
    Kind("approved", 50, APPROVED),
    Kind("consumer unknown", 8, REJECTED_BY_CONSUMERS),
    Kind("consumer deactivated", 7, REJECTED_BY_CONSUMERS),
    Kind("restaurant closed", 8, REJECTED_BY_KITCHEN),
    Kind("not on the menu", 7, REJECTED_BY_KITCHEN),
    Kind("over the credit limit", 10, REJECTED_BY_CARD),
    Kind("card blocked", 10, REJECTED_BY_CARD),
)
KIND_BY_NAME = {kind.name: kind for kind in KINDS}


@dataclass
class Cast:
    """The consumers, accounts and restaurants of one round."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def __post_init__(self) -> None:
        self.rich = [f"rich-{self.run}-{i}" for i in range(RICH_CONSUMERS)]
        self.deactivated = f"gone-{self.run}"
        self.broke = f"broke-{self.run}"
        self.blocked = f"blocked-{self.run}"
        self.open_restaurant = f"open-{self.run}"
        self.closed_restaurant = f"closed-{self.run}"

    def set_up(self, urls: dict[str, str], headers: dict[str, str]) -> None:
        """Through the command APIs, before the load (and the kills) start."""
        with httpx.Client(timeout=30, headers=headers) as http:

            def post(url: str, body: dict[str, Any] | None = None) -> None:
                key = {"Idempotency-Key": uuid.uuid4().hex}
                http.post(url, json=body or {}, headers=key).raise_for_status()

            limits = dict.fromkeys(self.rich, UNREACHABLE_LIMIT)
            limits |= {
                self.deactivated: UNREACHABLE_LIMIT,
                self.broke: BELOW_ANY_ORDER,
                self.blocked: UNREACHABLE_LIMIT,
            }
            for consumer, limit in limits.items():
                post(f"{urls['consumers']}/consumers", {"consumer_id": consumer, "name": "Ann"})
                account = {"consumer_id": consumer, "credit_limit_cents": limit}
                post(f"{urls['accounting']}/accounts", account)
            post(
                f"{urls['consumers']}/consumers/{self.deactivated}/deactivate",
                {"reason": "moved away"},
            )
            post(f"{urls['accounting']}/accounts/{self.blocked}/block", {"reason": "stolen"})
            for restaurant in (self.open_restaurant, self.closed_restaurant):
                place = {"restaurant_id": restaurant, "name": "Luigi's", "menu": MENU}
                post(f"{urls['kitchen']}/restaurants", place)
            post(f"{urls['kitchen']}/restaurants/{self.closed_restaurant}/close")

    def inputs(self, kind: str, number: int) -> tuple[str, str, list[dict[str, Any]]]:
        """(consumer, restaurant, line items) of an order of this kind."""
        rich = self.rich[number % RICH_CONSUMERS]
        return {
            "approved": (rich, self.open_restaurant, [PIZZA]),
            "consumer unknown": (f"nobody-{self.run}-{number}", self.open_restaurant, [PIZZA]),
            "consumer deactivated": (self.deactivated, self.open_restaurant, [PIZZA]),
            "restaurant closed": (rich, self.closed_restaurant, [PIZZA]),
            "not on the menu": (rich, self.open_restaurant, [PIZZA, SUSHI]),
            "over the credit limit": (self.broke, self.open_restaurant, [PIZZA]),
            "card blocked": (self.blocked, self.open_restaurant, [PIZZA]),
        }[kind]


@dataclass
class PlacedOrder:
    """One order the client placed: its inputs, and what the API answered."""

    number: int
    kind: str
    key: str  # Idempotency-Key, also the delivery address's street: found in the store
    customer_id: str
    restaurant_id: str
    line_items: list[dict[str, Any]]
    order_id: str | None = None  # from the 201
    answers: Counter[str] = field(default_factory=Counter)  # status code or error name

    @property
    def expected(self) -> Outcome:
        return KIND_BY_NAME[self.kind].outcome

    @property
    def total_cents(self) -> int:
        return sum(item["quantity"] * item["unit_price_cents"] for item in self.line_items)

    def body(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "restaurant_id": self.restaurant_id,
            "delivery_address": {
                "street": self.key,
                "city": "Chaosville",
                "postal_code": "12345",
                "country": "US",
            },
            "line_items": self.line_items,
        }


def plan_orders(cast: Cast, rng: random.Random, count: int) -> list[PlacedOrder]:
    """`count` orders of kinds drawn by weight; the first seven one of each kind, so
    every outcome is represented however short the round."""
    names = [kind.name for kind in KINDS]
    drawn = names + rng.choices(names, [kind.weight for kind in KINDS], k=max(count - 7, 0))
    orders = []
    for number, kind in enumerate(drawn[:count]):
        customer, restaurant, items = cast.inputs(kind, number)
        key = f"chaos-{uuid.UUID(int=rng.getrandbits(128)).hex}"
        orders.append(PlacedOrder(number, kind, key, customer, restaurant, items))
    return orders


async def place(http: aiohttp.ClientSession, order: PlacedOrder, give_up_at: float) -> None:
    """POST the order until a 201 (or a 4xx that is the order's own fault), sending the
    same Idempotency-Key each time, as a client that lost its answer would."""
    delay = 0.1
    while time.monotonic() < give_up_at:
        try:
            async with http.post(
                "/orders", json=order.body(), headers={"Idempotency-Key": order.key}
            ) as response:
                order.answers[str(response.status)] += 1
                if response.status == 201:
                    order.order_id = str((await response.json())["order_id"])
                    return
                body = await response.read()
                if response.status == 409 and (saved := _lost_answer(body)):
                    order.order_id = saved  # placed; its answer was not kept (ADR 25)
                    return
                if 400 <= response.status < 500 and response.status not in (408, 409, 429):
                    return  # refused for what it is: sending it again changes nothing
        except (aiohttp.ClientError, TimeoutError) as error:
            order.answers[type(error).__name__] += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def _lost_answer(body: bytes) -> str | None:
    """The order's id from a 409 "Answer lost" (what the request saved); None for
    another 409."""
    try:
        problem = json.loads(body)
    except ValueError:
        return None
    if not isinstance(problem, dict) or problem.get("title") != "Answer lost":
        return None
    saved = problem.get("saved")
    return str(saved[0]["id"]) if saved else None


async def offer(
    orders_url: str,
    headers: dict[str, str],
    orders: list[PlacedOrder],
    rate: float,
    retry_for: float,
) -> float:
    """Place `orders` at `rate` per second (open loop: the i-th is due at i / rate,
    whatever the answers); each is retried for `retry_for` seconds after the last is
    due. Returns the seconds from the first due time to the last answer."""
    started = time.monotonic()
    give_up_at = started + len(orders) / rate + retry_for
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(
        orders_url, headers=headers, timeout=timeout, connector=connector
    ) as http:
        tasks = []
        for index, order in enumerate(orders):
            due = started + index / rate
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(place(http, order, give_up_at)))
        await asyncio.gather(*tasks)
    return time.monotonic() - started
