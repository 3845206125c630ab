"""Look up contract models by wire type and validate messages against them."""

from functools import cache

from pydantic import ValidationError

from contracts import accounting, consumers, kitchen, orders
from contracts.base import ContractEvent
from contracts.envelope import Envelope

ALL_EVENTS: tuple[type[ContractEvent], ...] = (
    *orders.EVENTS,
    *consumers.EVENTS,
    *kitchen.EVENTS,
    *accounting.EVENTS,
)
_MODELS: dict[str, type[ContractEvent]] = {model.type(): model for model in ALL_EVENTS}


class ContractError(ValueError):
    """A message that no consumer can read: its reason goes to the dead-letter topic."""


def is_known_type(type_: str) -> bool:
    """Is this a contract event type (name and major) of any service?"""
    return type_ in _MODELS


def decode_envelope(raw: bytes | None) -> Envelope:
    if raw is None:
        raise ContractError("empty message (no value)")
    try:
        return Envelope.from_bytes(raw)
    except ValueError as error:  # JSON and pydantic errors both subclass ValueError
        raise ContractError(f"not a valid envelope: {_short(error)}") from error


def parse_data(envelope: Envelope, accepted: tuple[type[ContractEvent], ...]) -> ContractEvent:
    """Validate the envelope's data against the contract its type names.

    ``accepted`` are the contract versions the consumer handles; any other type is
    refused with a reason (unknown type or unsupported major).
    """
    model = _by_type(accepted).get(envelope.type)
    if model is None:
        name = envelope.type.rsplit(".v", 1)[0]
        if any(accepted_model.name == name for accepted_model in accepted):
            raise ContractError(f"unsupported version for this consumer: {envelope.type}")
        if envelope.type in _MODELS:
            raise ContractError(f"unsupported event type for this consumer: {envelope.type}")
        raise ContractError(f"unknown event type: {envelope.type}")
    try:
        return model.model_validate(envelope.data)
    except ValidationError as error:
        raise ContractError(f"{envelope.type} violates its contract: {_short(error)}") from error


@cache
def _by_type(accepted: tuple[type[ContractEvent], ...]) -> dict[str, type[ContractEvent]]:
    return {model.type(): model for model in accepted}


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in e['loc']) or '(root)'}: {e['msg']}"
            for e in error.errors()[:10]
        ]
        return "; ".join(problems)
    return str(error).replace("\n", " ")[:500]
