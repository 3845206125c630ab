from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ContractModel(BaseModel):
    """Base class of every model in a contract: an event's payload, or a value inside one.

    Unknown fields are ignored so a consumer keeps working when a producer adds an
    optional field (a minor version). The rules: contracts/README.md.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


class ContractEvent(ContractModel):
    """Base class of every integration event's payload (the envelope's ``data``).

    An event names itself in its class statement: ``class CardAuthorized(ContractEvent,
    name="accounting.CardAuthorized", version="1.0")``, a stable ``name``
    (``<service>.<EventName>``) and a ``version`` (``major.minor``). A class without them
    only holds fields its subclasses share (say, the id every event of a saga carries).
    """

    name: ClassVar[str]
    version: ClassVar[str]

    def __init_subclass__(
        cls, name: str | None = None, version: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if (name is None) != (version is None):
            raise TypeError(f"{cls.__qualname__}: give a contract event a name and a version")
        if name is not None and version is not None:
            cls.name, cls.version = name, version

    @classmethod
    def major(cls) -> int:
        return int(cls.version.split(".")[0])

    @classmethod
    def type(cls) -> str:
        """The event type on the wire: name plus major version."""
        return f"{cls.name}.v{cls.major()}"


@dataclass(frozen=True)
class Conversion:
    """Turns an event of one major of a contract into the next major up or down.

    An *upcaster* (``target`` one major above ``source``) lets a consumer written for
    the new major read the old messages still in a topic; a *downcaster* (one below)
    lets a producer keep publishing the old major during a transition period.
    """

    source: type[ContractEvent]
    target: type[ContractEvent]
    convert: Callable[[Any], ContractEvent]

    def __post_init__(self) -> None:
        if self.source.name != self.target.name:
            raise ValueError(f"cannot convert {self.source.name} into {self.target.name}")
        if abs(self.source.major() - self.target.major()) != 1:
            raise ValueError(
                f"{self.source.type()} → {self.target.type()}: convert one major at a time"
            )

    def __call__(self, event: ContractEvent) -> ContractEvent:
        converted = self.convert(event)
        if not isinstance(converted, self.target):
            raise TypeError(f"{self.source.type()} → {self.target.type()} returned {converted!r}")
        return converted
