"""The tallies command API, for tests that need it in a process of its own:
``uvicorn tests.kernel_example.api:create_app --factory``."""

from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from tests.kernel_example.application import TalliesApplication
from write_side.kernel.api import Id, Strict, command_api
from write_side.kernel.application import open_application
from write_side.kernel.auth import OpsOnly


class TalliesSettings(BaseSettings):
    """Environment: TALLIES_DATABASE_URL, TALLIES_DATABASE_SCHEMA."""

    model_config = SettingsConfigDict(extra="ignore")

    tallies_database_url: str = "sqlite:///var/tallies.db"
    tallies_database_schema: str | None = None


class StartTally(Strict):
    name: Id


class TallyStarted(BaseModel):
    tally_id: UUID
    version: int
    position: int


def create_app(settings: TalliesSettings | None = None) -> FastAPI:
    settings = settings or TalliesSettings()
    api, tallies = command_api(
        "Tallies command API",
        "tallies",
        lambda: open_application(
            TalliesApplication, settings.tallies_database_url, settings.tallies_database_schema
        ),
    )

    @api.post("/tallies", status_code=201)
    def start_tally(
        body: StartTally, app: Annotated[TalliesApplication, Depends(tallies)], caller: OpsOnly
    ) -> TallyStarted:
        saved = app.start_tally(body.name)
        return TallyStarted(tally_id=saved.tally_id, version=saved.version, position=saved.position)

    return api
