"""The accounting command API: ``uvicorn write_side.accounting.api:create_app --factory``."""

from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import Field

from kernel.api import FromAggregate, Id, IdInPath, Strict, command_api, owner_in_path
from kernel.auth import CUSTOMER, OpsOnly, Principal
from write_side.accounting.application import AccountingApplication
from write_side.accounting.bootstrap import build_application
from write_side.accounting.domain import Account
from write_side.accounting.settings import AccountingSettings


class OpenAccount(Strict):
    consumer_id: Id
    credit_limit_cents: int = Field(gt=0, le=1_000_000_000)


class BlockCard(Strict):
    reason: str = Field(min_length=1, max_length=500)


class CommandAccepted(FromAggregate):
    consumer_id: str
    version: int


class AccountOut(FromAggregate):
    consumer_id: str
    credit_limit_cents: int
    authorized_total_cents: int
    card_blocked: bool
    version: int


ItsConsumerOrOps = Annotated[Principal, Depends(owner_in_path("consumer_id", CUSTOMER, "account"))]
"""The consumer whose account is named in the path, or ops."""


def create_app(settings: AccountingSettings | None = None) -> FastAPI:
    settings = settings or AccountingSettings()
    api, accounting = command_api("accounting", lambda: build_application(settings))

    Accounting = Annotated[AccountingApplication, Depends(accounting)]

    @api.post("/accounts", status_code=201, response_model=CommandAccepted)
    def open_account(body: OpenAccount, app: Accounting, caller: OpsOnly) -> Account:
        return app.open_account(body.consumer_id, body.credit_limit_cents)

    @api.post("/accounts/{consumer_id}/block", response_model=CommandAccepted)
    def block_card(
        consumer_id: IdInPath, body: BlockCard, app: Accounting, caller: OpsOnly
    ) -> Account:
        return app.block_card(consumer_id, body.reason)

    @api.post("/accounts/{consumer_id}/unblock", response_model=CommandAccepted)
    def unblock_card(consumer_id: IdInPath, app: Accounting, caller: OpsOnly) -> Account:
        return app.unblock_card(consumer_id)

    @api.get("/accounts/{consumer_id}", response_model=AccountOut)
    def get_account(consumer_id: IdInPath, app: Accounting, caller: ItsConsumerOrOps) -> Account:
        return app.get_account(consumer_id)

    return api
