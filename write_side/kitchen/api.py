"""The kitchen command API (one process): ``uvicorn write_side.kitchen.api:create_app --factory``.

Restaurants are registered open, so the demo can place orders at once; close them to
see the kitchen reject tickets. Tickets are made by the saga only: the API reads them.
"""

from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI
from pydantic import AfterValidator, Field

from kernel.api import FromAggregate, Id, IdInPath, Strict, command_api, owner_in_path
from kernel.auth import RESTAURANT, OpsOnly, Principal, RestaurantOrOps
from write_side.kitchen.application import KitchenApplication, Saved
from write_side.kitchen.bootstrap import build_application
from write_side.kitchen.domain import Restaurant
from write_side.kitchen.settings import KitchenSettings

RestaurantId = IdInPath


def _no_duplicates(menu: list[str]) -> list[str]:
    duplicates = sorted({item for item in menu if menu.count(item) > 1})
    if duplicates:
        raise ValueError(f"menu items listed twice: {', '.join(duplicates)}")
    return menu


Menu = Annotated[list[Id], Field(min_length=1, max_length=200), AfterValidator(_no_duplicates)]


class RegisterRestaurant(Strict):
    restaurant_id: Id
    name: str = Field(min_length=1, max_length=200)
    menu: Menu


class SetMenu(Strict):
    menu: Menu


class CommandAccepted(FromAggregate):
    restaurant_id: str
    version: int
    position: int | None = Field(
        description="The event's position in the kitchen's log; null if nothing changed."
    )


class RestaurantOut(FromAggregate):
    restaurant_id: str
    name: str
    open: bool = Field(validation_alias="is_open")
    menu: list[str]
    version: int


class TicketOut(FromAggregate):
    order_id: UUID
    restaurant_id: str
    state: str
    reason: str | None = Field(description="Why it was rejected or cancelled.")
    version: int


ItsOwnerOrOps = Annotated[
    Principal, Depends(owner_in_path("restaurant_id", RESTAURANT, "restaurant"))
]
"""The restaurant named in the path, or ops."""


def create_app(settings: KitchenSettings | None = None) -> FastAPI:
    settings = settings or KitchenSettings()
    api, kitchen = command_api("kitchen", lambda: build_application(settings))

    Kitchen = Annotated[KitchenApplication, Depends(kitchen)]

    @api.post("/restaurants", status_code=201, response_model=CommandAccepted)
    def register_restaurant(body: RegisterRestaurant, app: Kitchen, caller: OpsOnly) -> Saved:
        """Register a restaurant, open, with its menu; an existing id is a 409."""
        return app.register_restaurant(body.restaurant_id, body.name, body.menu)

    @api.post("/restaurants/{restaurant_id}/open", response_model=CommandAccepted)
    def open_restaurant(restaurant_id: RestaurantId, app: Kitchen, caller: ItsOwnerOrOps) -> Saved:
        return app.open_restaurant(restaurant_id)

    @api.post("/restaurants/{restaurant_id}/close", response_model=CommandAccepted)
    def close_restaurant(restaurant_id: RestaurantId, app: Kitchen, caller: ItsOwnerOrOps) -> Saved:
        return app.close_restaurant(restaurant_id)

    @api.put("/restaurants/{restaurant_id}/menu", response_model=CommandAccepted)
    def set_menu(
        restaurant_id: RestaurantId, body: SetMenu, app: Kitchen, caller: ItsOwnerOrOps
    ) -> Saved:
        return app.set_menu(restaurant_id, body.menu)

    @api.get("/restaurants/{restaurant_id}", response_model=RestaurantOut)
    def get_restaurant(
        restaurant_id: RestaurantId, app: Kitchen, caller: ItsOwnerOrOps
    ) -> Restaurant:
        return app.get_restaurant(restaurant_id)

    @api.get("/tickets/{order_id}")
    def get_ticket(order_id: UUID, app: Kitchen, caller: RestaurantOrOps) -> TicketOut:
        """The order's ticket as the write model holds it now: its restaurant's, or ops."""
        ticket = app.get_ticket(order_id)
        caller.authorize(f"ticket {order_id}", restaurant=ticket.restaurant_id)
        return TicketOut.model_validate(ticket)

    return api
