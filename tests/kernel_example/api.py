"""The tallies command API, for tests that need it in a process of its own:
``uvicorn tests.kernel_example.api:create_app --factory``."""

from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.api import Id, IdInPath, Strict, command_api
from kernel.application import open_application
from kernel.auth import OpsOnly
from tests.kernel_example.application import Saved, TalliesApplication


class TalliesSettings(BaseSettings):
    """Environment: TALLIES_DATABASE_URL, TALLIES_DATABASE_SCHEMA."""

    model_config = SettingsConfigDict(extra="ignore")

    tallies_database_url: str = "sqlite:///var/tallies.db"
    tallies_database_schema: str | None = None


class StartTally(Strict):
    name: Id


class AddToTally(Strict):
    amount: int


class CloseTally(Strict):
    reason: str


class TallyStarted(BaseModel):
    """A command's answer (any of the tallies' commands)."""

    tally_id: UUID
    version: int
    position: int

    @classmethod
    def of(cls, saved: Saved) -> "TallyStarted":
        return cls(tally_id=saved.tally_id, version=saved.version, position=saved.position)


class TallyOut(BaseModel):
    version: int
    total: int
    closed: bool


def create_app(settings: TalliesSettings | None = None) -> FastAPI:
    settings = settings or TalliesSettings()
    api, tallies = command_api(
        "tallies",
        lambda: open_application(
            TalliesApplication, settings.tallies_database_url, settings.tallies_database_schema
        ),
    )

    Tallies = Annotated[TalliesApplication, Depends(tallies)]

    @api.post("/tallies", status_code=201)
    def start_tally(body: StartTally, app: Tallies, caller: OpsOnly) -> TallyStarted:
        return TallyStarted.of(app.start_tally(body.name))

    @api.post("/tallies/{name}/add")
    def add_to_tally(
        name: IdInPath, body: AddToTally, app: Tallies, caller: OpsOnly
    ) -> TallyStarted:
        return TallyStarted.of(app.add_to_tally(name, body.amount))

    @api.post("/tallies/{name}/close")
    def close_tally(
        name: IdInPath, body: CloseTally, app: Tallies, caller: OpsOnly
    ) -> TallyStarted:
        return TallyStarted.of(app.close_tally(name, body.reason))

    @api.get("/tallies/{name}")
    def get_tally(name: IdInPath, app: Tallies, caller: OpsOnly) -> TallyOut:
        tally = app.get_tally(name)
        return TallyOut(
            version=tally.version, total=tally.total, closed=tally.closed_because is not None
        )

    return api
