"""The consumers command API: ``uvicorn write_side.consumers.api:create_app --factory``."""

from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import Field

from kernel.api import FromAggregate, Id, IdInPath, Strict, command_api, owner_in_path
from kernel.auth import CUSTOMER, CustomerOrOps, OpsOnly, Principal
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.bootstrap import build_application
from write_side.consumers.domain import Consumer
from write_side.consumers.settings import ConsumersSettings


class RegisterConsumer(Strict):
    consumer_id: Id
    name: str = Field(min_length=1, max_length=200)


class DeactivateConsumer(Strict):
    reason: str = Field(min_length=1, max_length=500)


class CommandAccepted(FromAggregate):
    consumer_id: str
    version: int


class ConsumerOut(FromAggregate):
    consumer_id: str
    name: str
    active: bool
    version: int


ThemselvesOrOps = Annotated[Principal, Depends(owner_in_path("consumer_id", CUSTOMER, "consumer"))]
"""The consumer named in the path themselves, or ops."""


def create_app(settings: ConsumersSettings | None = None) -> FastAPI:
    settings = settings or ConsumersSettings()
    api, consumers = command_api("consumers", lambda: build_application(settings))

    Consumers = Annotated[ConsumersApplication, Depends(consumers)]

    @api.post("/consumers", status_code=201, response_model=CommandAccepted)
    def register_consumer(
        body: RegisterConsumer, app: Consumers, caller: CustomerOrOps
    ) -> Consumer:
        """A customer registers themselves (consumer_id is their id); ops anyone."""
        caller.authorize(f"consumer {body.consumer_id}", customer=body.consumer_id)
        return app.register_consumer(body.consumer_id, body.name)

    @api.post("/consumers/{consumer_id}/deactivate", response_model=CommandAccepted)
    def deactivate_consumer(
        consumer_id: IdInPath, body: DeactivateConsumer, app: Consumers, caller: OpsOnly
    ) -> Consumer:
        return app.deactivate_consumer(consumer_id, body.reason)

    @api.post("/consumers/{consumer_id}/reactivate", response_model=CommandAccepted)
    def reactivate_consumer(consumer_id: IdInPath, app: Consumers, caller: OpsOnly) -> Consumer:
        return app.reactivate_consumer(consumer_id)

    @api.get("/consumers/{consumer_id}", response_model=ConsumerOut)
    def get_consumer(consumer_id: IdInPath, app: Consumers, caller: ThemselvesOrOps) -> Consumer:
        return app.get_consumer(consumer_id)

    return api
