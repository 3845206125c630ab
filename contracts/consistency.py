"""The consistency token a command returns and a query may carry (read-your-writes).

It names the event the command wrote: the service, its position in that service's
log, the aggregate and the aggregate's version. A read model has "reached" the token
when its document for that aggregate holds that version or a later one.
"""

import re
from dataclasses import dataclass
from uuid import UUID

_NUMBER = re.compile(r"[1-9][0-9]{0,18}")
"""A position or version: positive, in ASCII digits, below 2**63 (what MongoDB stores)."""
LIMIT = 2**63


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
        shown = text if len(text) <= 200 else f"{text[:200]}…"
        try:
            service, position, aggregate_id, version = text.split(":")
            if not (_NUMBER.fullmatch(position) and _NUMBER.fullmatch(version)):
                raise ValueError(text)
            token = cls(service, int(position), str(UUID(aggregate_id)), int(version))
        except ValueError:
            raise InvalidToken(
                f"malformed consistency token {shown!r} "
                "(expected service:position:aggregate_id:version)"
            ) from None
        if token.position >= LIMIT or token.version >= LIMIT:
            raise InvalidToken(
                f"malformed consistency token {shown!r} (position and version are below 2**63)"
            )
        return token
