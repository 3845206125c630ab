"""The tallies' query route: one tally, read-your-writes with a tallies consistency token,
as a domain's ``read_side/<domain>.py`` writes it (for the kernel's read-model tests)."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from contracts.consistency import ConsistencyToken
from kernel.read_models import ReadModel, consistency_token, read_model_of
from tests.kernel_example.contracts import TOPIC
from tests.kernel_example.projection import TALLIES


async def _read_model(request: Request) -> ReadModel:
    return read_model_of(request.app, TALLIES.name, topic=TOPIC)


Tallies = Annotated[ReadModel, Depends(_read_model)]
Token = Annotated[ConsistencyToken | None, Depends(consistency_token(TOPIC))]

router = APIRouter()


@router.get("/tallies/{tally_id}")
async def get_tally(
    tally_id: str, response: Response, read_model: Tallies, token: Token
) -> dict[str, Any]:
    staleness = await read_model.caught_up(token)
    document = await (await read_model.collection()).find_one({"_id": tally_id})
    headers = staleness.headers(datetime.now(UTC))
    if document is None:
        raise HTTPException(404, f"tally {tally_id} not found", headers=headers)
    response.headers.update(headers)
    return {"total": document["total"], "version": document["version"]}
