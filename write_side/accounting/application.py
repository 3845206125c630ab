"""The accounting Application: commands are get → mutate → save; ``authorize`` decides only.

``authorize`` and ``fail_authorization`` return the aggregates to save and save
nothing: the saga's Reactor saves them together with the consumed message's position,
in one transaction. If the Account changed meanwhile, that save conflicts and the
Reactor calls ``authorize`` again on the fresh Account.
"""

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from kernel.application import ServiceApplication
from kernel.errors import DomainError, NotFound
from kernel.group_commit import command
from write_side.accounting.domain import Account, Authorization


class AccountingApplication(ServiceApplication):
    name = "accounting"  # table names: accounting_events, accounting_tracking, ..._snapshots
    # An Account lives as long as its consumer and grows with every order: loading it
    # reads its last snapshot and at most this many events, however long its history.
    snapshotting_intervals = {Account: 50}  # noqa: RUF012 - eventsourcing's class setting

    @command
    def open_account(self, consumer_id: str, credit_limit_cents: int) -> Account:
        if Account.create_id(consumer_id) in self.repository:
            raise DomainError(f"consumer {consumer_id} already has an account")
        account = Account(consumer_id=consumer_id, credit_limit_cents=credit_limit_cents)
        self.save(account)
        return account

    @command
    def block_card(self, consumer_id: str, reason: str) -> Account:
        account = self.get_account(consumer_id)
        account.block_card(reason)
        self.save(account)
        return account

    @command
    def unblock_card(self, consumer_id: str) -> Account:
        account = self.get_account(consumer_id)
        account.unblock_card()
        self.save(account)
        return account

    def get_account(self, consumer_id: str) -> Account:
        try:
            account: Account = self.repository.get(Account.create_id(consumer_id))
        except AggregateNotFoundError:
            raise NotFound(f"no account for consumer {consumer_id}") from None
        return account

    def authorize(self, order_id: str, consumer_id: str, amount_cents: int) -> list[Any]:
        """Authorize the order's amount on the consumer's card; [] if already decided."""
        if self._decided_already(order_id):
            return []
        try:
            account = self.get_account(consumer_id)
        except NotFound as not_found:
            return [Authorization.failed(order_id, consumer_id, str(not_found))]
        refusal = account.refusal_for(amount_cents)
        if refusal is not None:
            return [Authorization.failed(order_id, consumer_id, refusal)]
        account.authorize(order_id, amount_cents)
        return [account, Authorization.succeeded(order_id, consumer_id, amount_cents)]

    def fail_authorization(self, order_id: str, consumer_id: str, reason: str) -> list[Any]:
        """The order's authorization failed for ``reason``; [] if already decided."""
        if self._decided_already(order_id):
            return []
        return [Authorization.failed(order_id, consumer_id, reason)]

    def get_authorization(self, order_id: str) -> Authorization:
        try:
            authorization: Authorization = self.repository.get(UUID(order_id))
        except AggregateNotFoundError:
            raise NotFound(f"no authorization of order {order_id}") from None
        return authorization

    def _decided_already(self, order_id: str) -> bool:
        return Authorization.create_id(order_id) in self.repository
