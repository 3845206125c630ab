from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

OrderId = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="The order's UUID (lower case, with dashes); saga aggregates use it as id.",
    ),
]


class ContractEvent(BaseModel):
    """Base class of every integration event's payload (the envelope's ``data``).

    Subclasses set ``name`` (stable, ``<service>.<EventName>``) and ``version``
    (``major.minor``). Unknown fields are ignored so a consumer keeps working when a
    producer adds an optional field (a minor version).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: ClassVar[str]
    version: ClassVar[str]

    @classmethod
    def major(cls) -> int:
        return int(cls.version.split(".")[0])

    @classmethod
    def type(cls) -> str:
        """The event type on the wire: name plus major version."""
        return f"{cls.name}.v{cls.major()}"
