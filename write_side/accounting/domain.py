"""The Account and Authorization aggregates. Plain Python: no infrastructure."""

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from kernel.errors import DomainError

NAMESPACE = UUID("f79b551c-1b64-49b7-b197-284912fa8177")
"""Account ids are derived from the consumer's id ("cust-1"): one account per consumer."""


class Account(Aggregate):
    """A consumer's card account. Authorizations add up against one credit limit."""

    class Opened(Aggregate.Created):
        consumer_id: str
        credit_limit_cents: int

    class CardBlocked(Aggregate.Event):
        reason: str

    class CardUnblocked(Aggregate.Event):
        pass

    class Authorized(Aggregate.Event):
        order_id: str
        amount_cents: int

    @staticmethod
    def create_id(consumer_id: str) -> UUID:
        return uuid5(NAMESPACE, consumer_id)

    @event(Opened)
    def __init__(self, consumer_id: str, credit_limit_cents: int) -> None:
        if not consumer_id:
            raise DomainError("an account needs a consumer id")
        if credit_limit_cents <= 0:
            raise DomainError("the credit limit must be positive")
        self.consumer_id = consumer_id
        self.credit_limit_cents = credit_limit_cents
        self.authorized_total_cents = 0
        self.card_blocked = False
        self.block_reason: str | None = None

    def block_card(self, reason: str) -> None:
        if self.card_blocked:
            raise DomainError(f"the card of {self.consumer_id} is already blocked")
        self._card_blocked(reason)

    def unblock_card(self) -> None:
        if not self.card_blocked:
            raise DomainError(f"the card of {self.consumer_id} is not blocked")
        self._card_unblocked()

    def refusal_for(self, amount_cents: int) -> str | None:
        """Why an authorization of ``amount_cents`` would be refused; None if it would not."""
        if self.card_blocked:
            return f"card blocked: {self.block_reason}"
        if self.authorized_total_cents + amount_cents > self.credit_limit_cents:
            return (
                f"over the credit limit: {self.authorized_total_cents} + {amount_cents} "
                f"> {self.credit_limit_cents}"
            )
        return None

    def authorize(self, order_id: str, amount_cents: int) -> None:
        if amount_cents <= 0:
            raise DomainError("an authorization must be for a positive amount")
        refusal = self.refusal_for(amount_cents)
        if refusal is not None:
            raise DomainError(refusal)
        self._authorized(order_id, amount_cents)

    @event(CardBlocked)
    def _card_blocked(self, reason: str) -> None:
        self.card_blocked = True
        self.block_reason = reason

    @event(CardUnblocked)
    def _card_unblocked(self) -> None:
        self.card_blocked = False
        self.block_reason = None

    @event(Authorized)
    def _authorized(self, order_id: str, amount_cents: int) -> None:
        self.authorized_total_cents += amount_cents


class Authorization(Aggregate):
    """The accounting service's answer for one order; its id is the order's id.

    It is created once, authorized or failed, and never changes: a second
    authorization of the same order collides with the first on creation.
    Either creation event gives ``__init__`` the fields it names (eventsourcing does):
    a ``reason`` is what makes it failed.
    """

    class Authorized(Aggregate.Created):
        order_id: str
        consumer_id: str
        amount_cents: int

    class Failed(Aggregate.Created):
        order_id: str
        consumer_id: str
        reason: str

    @staticmethod
    def create_id(order_id: str) -> UUID:
        return UUID(order_id)

    def __init__(
        self, order_id: str, consumer_id: str, amount_cents: int = 0, reason: str | None = None
    ) -> None:
        self.order_id = order_id
        self.consumer_id = consumer_id
        self.authorized = reason is None
        self.amount_cents = amount_cents
        self.reason = reason

    @classmethod
    def succeeded(cls, order_id: str, consumer_id: str, amount_cents: int) -> "Authorization":
        return cls._create(
            cls.Authorized, order_id=order_id, consumer_id=consumer_id, amount_cents=amount_cents
        )

    @classmethod
    def failed(cls, order_id: str, consumer_id: str, reason: str) -> "Authorization":
        return cls._create(cls.Failed, order_id=order_id, consumer_id=consumer_id, reason=reason)
