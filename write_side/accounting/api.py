"""The accounting command API: ``uvicorn write_side.accounting.api:create_app --factory``."""

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
from write_side.accounting.application import AccountingApplication
from write_side.accounting.bootstrap import build_application
from write_side.accounting.domain import Account
from write_side.accounting.settings import AccountingSettings


class OpenAccount(Strict):
    consumer_id: Id
    credit_limit_cents: int = Field(gt=0, le=1_000_000_000)


class BlockCard(Strict):
    reason: str = Field(min_length=1, max_length=500)


class CommandAccepted(BaseModel):
    consumer_id: str
    version: int

    @classmethod
    def of(cls, account: Account) -> "CommandAccepted":
        return cls(consumer_id=account.consumer_id, version=account.version)


class AccountOut(BaseModel):
    consumer_id: str
    credit_limit_cents: int
    authorized_total_cents: int
    card_blocked: bool
    version: int


def create_app(settings: AccountingSettings | None = None) -> FastAPI:
    settings = settings or AccountingSettings()

    api, accounting = command_api(
        "Accounting command API", "accounting", lambda: build_application(settings)
    )

    Accounting = Annotated[AccountingApplication, Depends(accounting)]

    @api.post("/accounts", status_code=201)
    def open_account(body: OpenAccount, app: Accounting, caller: OpsOnly) -> CommandAccepted:
        account = app.open_account(body.consumer_id, body.credit_limit_cents)
        return CommandAccepted.of(account)

    @api.post("/accounts/{consumer_id}/block")
    def block_card(
        consumer_id: IdInPath, body: BlockCard, app: Accounting, caller: OpsOnly
    ) -> CommandAccepted:
        account = app.block_card(consumer_id, body.reason)
        return CommandAccepted.of(account)

    @api.post("/accounts/{consumer_id}/unblock")
    def unblock_card(consumer_id: IdInPath, app: Accounting, caller: OpsOnly) -> CommandAccepted:
        account = app.unblock_card(consumer_id)
        return CommandAccepted.of(account)

    @api.get("/accounts/{consumer_id}")
    def get_account(consumer_id: IdInPath, app: Accounting, caller: CustomerOrOps) -> AccountOut:
        """The account's consumer, or ops."""
        caller.authorize(f"account {consumer_id}", customer=consumer_id)
        account = app.get_account(consumer_id)
        return AccountOut(
            consumer_id=account.consumer_id,
            credit_limit_cents=account.credit_limit_cents,
            authorized_total_cents=account.authorized_total_cents,
            card_blocked=account.card_blocked,
            version=account.version,
        )

    return api
