"""Look up contract models by wire type, validate messages against them, and move an
event between the majors of its contract (upcasting for readers, downcasting for a
producer in a transition period)."""

from collections.abc import Collection, Iterable
from types import ModuleType

from pydantic import ValidationError

from contracts.base import ContractEvent, Conversion
from contracts.discovery import modules_where
from contracts.envelope import Envelope

SERVICE_CONTRACTS: tuple[ModuleType, ...] = tuple(modules_where("contracts", "TOPIC"))
"""Each service's contract module, found by its ``TOPIC`` (`contracts/<domain>.py`, in
name order): the topic and the events it publishes."""

CURRENT_EVENTS: tuple[type[ContractEvent], ...] = tuple(
    model for service in SERVICE_CONTRACTS for model in service.EVENTS
)
"""The version of each event that producers publish and new consumers are written for."""

ALL_EVENTS: tuple[type[ContractEvent], ...] = (
    *CURRENT_EVENTS,
    *(model for service in SERVICE_CONTRACTS for model in getattr(service, "SUPERSEDED", ())),
)
"""Every major of every event, current and superseded: all of them stay readable."""

_MODELS: dict[str, type[ContractEvent]] = {model.type(): model for model in ALL_EVENTS}
_UPCASTERS: dict[type[ContractEvent], Conversion] = {
    conversion.source: conversion
    for service in SERVICE_CONTRACTS
    for conversion in getattr(service, "UPCASTERS", ())
}
_DOWNCASTERS: dict[type[ContractEvent], Conversion] = {
    conversion.source: conversion
    for service in SERVICE_CONTRACTS
    for conversion in getattr(service, "DOWNCASTERS", ())
}


class ContractError(ValueError):
    """A message that no consumer can read: its reason goes to the dead-letter topic.

    ``kind`` names the reason for counting (the ``dlq_reason_kind`` header):
    ``malformed``, ``unknown-type``, ``unsupported-version``, ``unsupported-type`` or
    ``schema-violation``.
    """

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.kind = kind


def is_known_type(type_: str) -> bool:
    """Is this a contract event type (name and major) of any service?"""
    return type_ in _MODELS


def model_of(type_: str) -> type[ContractEvent] | None:
    return _MODELS.get(type_)


def topic_of(model: type[ContractEvent]) -> str:
    """The topic a contract event is published on (its service's)."""
    service = model.name.split(".", 1)[0]
    return next(
        module.TOPIC for module in SERVICE_CONTRACTS if module.__name__ == f"contracts.{service}"
    )


def upcasters() -> Iterable[Conversion]:
    return _UPCASTERS.values()


def upcast_chain(
    model: type[ContractEvent], accepted: Collection[type[ContractEvent]]
) -> list[Conversion] | None:
    """The upcasters that turn ``model`` into one of ``accepted`` (none if it is one of
    them), or None when no chain of upcasters leads there."""
    chain: list[Conversion] = []
    while model not in accepted:
        step = _UPCASTERS.get(model)
        if step is None:
            return None
        chain.append(step)
        model = step.target
    return chain


def readable_types(accepted: Collection[type[ContractEvent]]) -> frozenset[str]:
    """The wire types a consumer of ``accepted`` reads: those, and every older major
    that upcasts to one of them."""
    return frozenset(
        type_ for type_, model in _MODELS.items() if upcast_chain(model, accepted) is not None
    )


def decode_envelope(raw: bytes | None) -> Envelope:
    if raw is None:
        raise ContractError("empty message (no value)", "malformed")
    try:
        return Envelope.from_bytes(raw)
    except ValueError as error:  # JSON and pydantic errors both subclass ValueError
        raise ContractError(f"not a valid envelope: {_short(error)}", "malformed") from error


def parse_data(envelope: Envelope, accepted: tuple[type[ContractEvent], ...]) -> ContractEvent:
    """Validate the envelope's data against the contract its type names, and upcast it
    to the version the consumer accepts if it is an older major.

    ``accepted`` are the contract versions the consumer handles; any other type is
    refused with a reason (unknown type or unsupported major).
    """
    model = _MODELS.get(envelope.type)
    chain = upcast_chain(model, accepted) if model else None
    if model is None or chain is None:
        name = envelope.type.rsplit(".v", 1)[0]
        if any(accepted_model.name == name for accepted_model in accepted):
            raise ContractError(
                f"unsupported version for this consumer: {envelope.type}", "unsupported-version"
            )
        if model is not None:
            raise ContractError(
                f"unsupported event type for this consumer: {envelope.type}", "unsupported-type"
            )
        raise ContractError(f"unknown event type: {envelope.type}", "unknown-type")
    try:
        event = model.model_validate(envelope.data)
    except ValidationError as error:
        raise ContractError(
            f"{envelope.type} violates its contract: {_short(error)}", "schema-violation"
        ) from error
    for upcast in chain:
        event = upcast(event)
    return event


def editions(event: ContractEvent, also_publish: Collection[str]) -> list[ContractEvent]:
    """What a producer publishes for ``event``: the event itself, then each older major
    named in ``also_publish`` (a transition period), newest first.

    Newest first matters: a consumer that reads both majors keeps the first copy it
    meets (the second has the same aggregate version), and that must be the lossless one.
    """
    published = [event]
    if not also_publish:
        return published
    chain: list[Conversion] = []
    step = _DOWNCASTERS.get(type(event))
    while step is not None:
        chain.append(step)
        step = _DOWNCASTERS.get(step.target)
    # Convert only as far as the oldest major wanted: none at all after a transition.
    wanted = [i for i, step in enumerate(chain) if step.target.type() in also_publish]
    for step in chain[: wanted[-1] + 1] if wanted else ():
        event = step(event)
        if event.type() in also_publish:
            published.append(event)
    return published


def check_also_publish(types: Collection[str]) -> None:
    """Refuse a transition setting naming a type no producer can downcast to."""
    reachable = {conversion.target.type() for conversion in _DOWNCASTERS.values()}
    unknown = sorted(set(types) - reachable)
    if unknown:
        raise ValueError(
            f"cannot also publish {', '.join(unknown)}: not an older major with a downcaster "
            f"(possible: {', '.join(sorted(reachable)) or 'none'})"
        )


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in e['loc']) or '(root)'}: {e['msg']}"
            for e in error.errors()[:10]
        ]
        return "; ".join(problems)
    return str(error).replace("\n", " ")[:500]
