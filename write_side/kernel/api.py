"""HTTP plumbing shared by the command APIs: error mapping and message metadata."""

import uuid
from typing import Annotated

from eventsourcing.persistence import IntegrityError
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from write_side.kernel.errors import DomainError, NotFound
from write_side.kernel.metadata import MessageMetadata


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(_: Request, error: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(error)})

    @app.exception_handler(DomainError)
    async def forbidden_by_state(_: Request, error: DomainError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(error)})

    @app.exception_handler(IntegrityError)
    async def concurrency_conflict(_: Request, __: IntegrityError) -> JSONResponse:
        return JSONResponse(
            status_code=409,
            content={
                "detail": "the aggregate was changed by another command at the same time; "
                "reload it and retry"
            },
        )


def command_metadata(
    x_correlation_id: Annotated[str | None, Header(max_length=128)] = None,
) -> MessageMetadata:
    """Each HTTP command is its own cause; it joins the caller's correlation if given."""
    command_id = str(uuid.uuid4())
    return MessageMetadata(correlation_id=x_correlation_id or command_id, causation_id=command_id)
