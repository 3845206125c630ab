"""A mixed saga workload written through the four services' Applications, published by
their relays: the events the replay tests and the rebuild benchmark rebuild from."""

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.examples import ADDRESS
from kernel.application import ServiceApplication
from kernel.relay import Relay, build_relay
from write_side.accounting import relay as accounting_relay
from write_side.accounting.application import AccountingApplication
from write_side.accounting.bootstrap import build_application as accounting_application
from write_side.accounting.settings import AccountingSettings
from write_side.consumers import relay as consumers_relay
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.bootstrap import build_application as consumers_application
from write_side.consumers.settings import ConsumersSettings
from write_side.kitchen import relay as kitchen_relay
from write_side.kitchen.application import KitchenApplication
from write_side.kitchen.bootstrap import build_application as kitchen_application
from write_side.kitchen.settings import KitchenSettings
from write_side.orders import relay as orders_relay
from write_side.orders.application import OrdersApplication
from write_side.orders.bootstrap import build_application as orders_application
from write_side.orders.settings import OrdersSettings

SERVICES = ("orders", "consumers", "kitchen", "accounting")
LINE_ITEMS = [{"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250}]
TOTAL = 2500


def store_env(postgres_url: str, schema: str, sqlite_dir: Path) -> dict[str, str]:
    """Orders and consumers on PostgreSQL, kitchen and accounting on SQLite."""
    return {
        "ORDERS_DATABASE_URL": postgres_url,
        "ORDERS_DATABASE_SCHEMA": schema,
        "CONSUMERS_DATABASE_URL": postgres_url,
        "CONSUMERS_DATABASE_SCHEMA": schema,
        "KITCHEN_DATABASE_URL": f"sqlite:///{sqlite_dir}/kitchen.db",
        "ACCOUNTING_DATABASE_URL": f"sqlite:///{sqlite_dir}/accounting.db",
    }


@dataclass
class Workload:
    """The four services' stores and relays; every saga written so far."""

    env: dict[str, str]
    bootstrap: str
    orders: OrdersApplication = field(init=False)
    consumers: ConsumersApplication = field(init=False)
    kitchen: KitchenApplication = field(init=False)
    accounting: AccountingApplication = field(init=False)
    relays: list[Relay] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    written: int = 0  # sagas written
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one writer at a time

    def __post_init__(self) -> None:
        settings: dict[str, Any] = {"kafka_bootstrap_servers": self.bootstrap}
        env = {k.lower(): v for k, v in self.env.items()}
        self.orders = orders_application(OrdersSettings(**settings, **_own(env, "orders")))
        self.consumers = consumers_application(
            ConsumersSettings(**settings, **_own(env, "consumers"))
        )
        self.kitchen = kitchen_application(KitchenSettings(**settings, **_own(env, "kitchen")))
        self.accounting = accounting_application(
            AccountingSettings(**settings, **_own(env, "accounting"))
        )
        self.consumers.register_consumer("cust", "Customer")
        self.accounting.open_account("cust", 10**12)
        self.kitchen.register_restaurant("rest", "Pizzeria", ["pizza"])

    def apps(self) -> list[ServiceApplication]:
        return [self.orders, self.consumers, self.kitchen, self.accounting]

    async def start_relays(self) -> None:
        """Relays made inside the running loop (aiokafka's producer needs it)."""
        settings = OrdersSettings(kafka_bootstrap_servers=self.bootstrap)
        for app, module in zip(
            self.apps(),
            (orders_relay, consumers_relay, kitchen_relay, accounting_relay),
            strict=True,
        ):
            relay = build_relay(
                app,
                settings,
                topic=module.contract.TOPIC,
                to_contract=module.to_contract,
            )
            await relay.producer.start()
            self.relays.append(relay)
            self.positions[relay.topic] = relay.position()

    async def publish(self) -> None:
        """Publish everything stored so far."""
        async with self.lock:
            await self._publish()

    async def _publish(self) -> None:
        for relay in self.relays:
            while True:
                position, read = await relay.publish_next_batch(self.positions[relay.topic])
                self.positions[relay.topic] = position
                if read == 0:
                    break

    async def stop_relays(self) -> None:
        for relay in self.relays:
            await relay.producer.stop()

    def close(self) -> None:
        for app in self.apps():
            app.close()

    def saga(self) -> None:
        """One order's saga; the outcome cycles: approved, consumer unknown, restaurant
        unknown, approved then cancelled."""
        outcome = self.written % 4
        self.written += 1
        customer = "nobody" if outcome == 1 else "cust"
        restaurant = "nowhere" if outcome == 2 else "rest"
        order_id = self.orders.place_order(customer, restaurant, ADDRESS, LINE_ITEMS).order_id
        order = str(order_id)
        self.consumers.verify(order, customer, restaurant, LINE_ITEMS, TOTAL)
        if outcome == 1:
            self.orders.reject_order(order_id, "consumer unknown", "consumers")
            return
        self.kitchen.create_ticket(order_id, restaurant, customer, LINE_ITEMS, TOTAL)
        if outcome == 2:
            self.orders.reject_order(order_id, "restaurant unknown", "kitchen")
            return
        self.accounting.authorize(order, customer, TOTAL)
        self.kitchen.approve_ticket(order_id)
        self.orders.approve_order(order_id)
        if outcome == 3:
            self.orders.cancel_order(order_id, "changed my mind")

    async def write(self, sagas: int) -> None:
        async with self.lock:
            for _ in range(sagas):
                await asyncio.to_thread(self.saga)


def _own(env: dict[str, str], service: str) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k.startswith(f"{service}_")}


def new_schema() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"
