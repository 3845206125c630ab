"""The accounting Application: each command is get → mutate → save, nothing else.

``authorize`` and ``fail_authorization`` are the saga's commands: called by a reaction,
their save joins the batch that records the consumed message's position
(kernel.reactions). If the Account changed meanwhile, that batch's insert conflicts and
the Reactor runs ``authorize`` again on the fresh Account.
"""

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

    @command
    def authorize(self, order_id: str, consumer_id: str, amount_cents: int) -> None:
        """Authorize the order's amount on the consumer's card: the Authorization (and
        the Account's new total) or the failed Authorization; nothing if decided."""
        if self._decided_already(order_id):
            return
        try:
            account = self.get_account(consumer_id)
        except NotFound as not_found:
            self.save(Authorization.failed(order_id, consumer_id, str(not_found)))
            return
        refusal = account.refusal_for(amount_cents)
        if refusal is not None:
            self.save(Authorization.failed(order_id, consumer_id, refusal))
            return
        account.authorize(order_id, amount_cents)
        self.save(account, Authorization.succeeded(order_id, consumer_id, amount_cents))

    @command
    def fail_authorization(self, order_id: str, consumer_id: str, reason: str) -> None:
        """Save the order's authorization as failed for ``reason``; nothing if decided."""
        if self._decided_already(order_id):
            return
        self.save(Authorization.failed(order_id, consumer_id, reason))

    def get_authorization(self, order_id: str) -> Authorization:
        try:
            authorization: Authorization = self.repository.get(UUID(order_id))
        except AggregateNotFoundError:
            raise NotFound(f"no authorization of order {order_id}") from None
        return authorization

    def _decided_already(self, order_id: str) -> bool:
        return Authorization.create_id(order_id) in self.repository
