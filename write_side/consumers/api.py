"""The consumers command API: ``uvicorn write_side.consumers.api:create_app --factory``."""

from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from kernel.api import (
    Id,
    IdInPath,
    Strict,
    command_api,
)
from kernel.auth import CustomerOrOps, OpsOnly
from write_side.consumers.application import ConsumersApplication
from write_side.consumers.bootstrap import build_application
from write_side.consumers.domain import Consumer
from write_side.consumers.settings import ConsumersSettings


class RegisterConsumer(Strict):
    consumer_id: Id
    name: str = Field(min_length=1, max_length=200)


class DeactivateConsumer(Strict):
    reason: str = Field(min_length=1, max_length=500)


class CommandAccepted(BaseModel):
    consumer_id: str
    version: int

    @classmethod
    def of(cls, consumer: Consumer) -> "CommandAccepted":
        return cls(consumer_id=consumer.consumer_id, version=consumer.version)


class ConsumerOut(BaseModel):
    consumer_id: str
    name: str
    active: bool
    version: int


def create_app(settings: ConsumersSettings | None = None) -> FastAPI:
    settings = settings or ConsumersSettings()

    api, consumers = command_api(
        "Consumers command API", "consumers", lambda: build_application(settings)
    )

    Consumers = Annotated[ConsumersApplication, Depends(consumers)]

    @api.post("/consumers", status_code=201)
    def register_consumer(
        body: RegisterConsumer, app: Consumers, caller: CustomerOrOps
    ) -> CommandAccepted:
        """A customer registers themselves (consumer_id is their id); ops anyone."""
        caller.authorize(f"consumer {body.consumer_id}", customer=body.consumer_id)
        consumer = app.register_consumer(body.consumer_id, body.name)
        return CommandAccepted.of(consumer)

    @api.post("/consumers/{consumer_id}/deactivate")
    def deactivate_consumer(
        consumer_id: IdInPath,
        body: DeactivateConsumer,
        app: Consumers,
        caller: OpsOnly,
    ) -> CommandAccepted:
        consumer = app.deactivate_consumer(consumer_id, body.reason)
        return CommandAccepted.of(consumer)

    @api.post("/consumers/{consumer_id}/reactivate")
    def reactivate_consumer(
        consumer_id: IdInPath, app: Consumers, caller: OpsOnly
    ) -> CommandAccepted:
        consumer = app.reactivate_consumer(consumer_id)
        return CommandAccepted.of(consumer)

    @api.get("/consumers/{consumer_id}")
    def get_consumer(consumer_id: IdInPath, app: Consumers, caller: CustomerOrOps) -> ConsumerOut:
        """The consumer themselves, or ops."""
        caller.authorize(f"consumer {consumer_id}", customer=consumer_id)
        consumer = app.get_consumer(consumer_id)
        return ConsumerOut(
            consumer_id=consumer.consumer_id,
            name=consumer.name,
            active=consumer.active,
            version=consumer.version,
        )

    return api
