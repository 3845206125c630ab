"""The consistency token a command returns and a query may carry (read-your-writes).

It names the event the command wrote: the service, its position in that service's
log, the aggregate and the aggregate's version. A read model has "reached" the token
when its document for that aggregate holds that version or a later one.
"""

from dataclasses import dataclass
from uuid import UUID


class InvalidToken(ValueError):
    pass


@dataclass(frozen=True)
class ConsistencyToken:
    service: str
    position: int
    aggregate_id: str
    version: int

    def __str__(self) -> str:
        return f"{self.service}:{self.position}:{self.aggregate_id}:{self.version}"

    @classmethod
    def parse(cls, text: str) -> "ConsistencyToken":
        try:
            service, position, aggregate_id, version = text.split(":")
            token = cls(service, int(position), str(UUID(aggregate_id)), int(version))
        except ValueError:
            raise InvalidToken(
                f"malformed consistency token {text!r} "
                "(expected service:position:aggregate_id:version)"
            ) from None
        if token.position < 1 or token.version < 1:
            raise InvalidToken(f"malformed consistency token {text!r}")
        return token
