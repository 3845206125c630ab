"""Given-when-then for aggregates: given events, when a command, then events (or an error).

    order = (
        given(fact(Order.Placed, **PLACE))
        .when(lambda order: order.cancel("too late"))
        .then_error(DomainError, "the createOrder saga is still in progress ...")
    )
    given(fact(Order.Placed, **PLACE)).when(Order.approve).then(fact(Order.Approved))

The history is replayed into the aggregate (no command runs to build it); the command
gets that aggregate (None when there is no history: a command that creates one returns
it). ``then`` compares the recorded events with the expected ones by type and by every
attribute but the timestamp, and shows a diff when they differ; ``then_error`` wants the
error's type and exact message, and no event. Both check that the aggregate is what its
events make of it (a command changes state only through events) and return it.

It lives in the kernel, not in ``tests/``: every domain's tests import it, generated ones
included, and a project keeps the kernel whichever domains it has. It needs no test
runner (it raises AssertionError) and imports only eventsourcing and the standard library.
"""

import difflib
import pprint
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate
from eventsourcing.utils import get_topic

Event = CanMutateAggregate[Any]


@dataclass(frozen=True)
class Fact:
    """An event without its place in a stream; see ``fact``."""

    event_class: type[Event]
    data: dict[str, Any]

    def build(self, originator_id: Any, originator_version: int) -> Event:
        values = {
            "originator_id": originator_id,
            "originator_version": originator_version,
            "timestamp": self.event_class.create_timestamp(),
            **self.data,
        }
        if issubclass(self.event_class, CanInitAggregate):
            values.setdefault("originator_topic", get_topic(_aggregate_class(self.event_class)))
        return self.event_class(**values)


def fact(event_class: type[Event], /, **data: Any) -> Fact:
    """An event of ``event_class`` with ``data``. Its stream fills in what ``data`` does
    not give: the aggregate's id, the next version, the aggregate class's topic for a
    created event, a timestamp."""
    return Fact(event_class, data)


def given(*history: Fact | Event, originator_id: UUID | None = None) -> "Given":
    """The aggregate's past events; facts join the stream ``originator_id`` (by default
    the first one an event or a fact gives, else a new one) at versions 1, 2, ..."""
    if originator_id is None:
        ids = (
            e.data.get("originator_id") if isinstance(e, Fact) else e.originator_id for e in history
        )
        originator_id = next((i for i in ids if i is not None), None) or uuid4()
    events = [
        e.build(originator_id, version) if isinstance(e, Fact) else e
        for version, e in enumerate(history, start=1)
    ]
    return Given(events)


@dataclass(frozen=True)
class Given:
    history: list[Event]

    @property
    def aggregate(self) -> Any:
        """The aggregate the history makes, for a query (a new one at each call)."""
        return _replay(self.history)

    def when(self, command: Callable[[Any], object]) -> "Outcome":
        """Run ``command`` on the aggregate the history makes (None without history).

        If it returns an aggregate, that one is under test (it made a new one)."""
        aggregate = _replay(self.history)
        try:
            returned = command(aggregate)
        except Exception as error:  # noqa: BLE001 - the outcome `then` checks
            return Outcome(self.history, aggregate, _collect(aggregate), error)
        if isinstance(returned, BaseAggregate) and returned is not aggregate:
            recorded = _collect(aggregate) + _collect(returned)
            return Outcome([], returned, recorded, None, others=[(self.history, aggregate)])
        return Outcome(self.history, aggregate, _collect(aggregate), None)


@dataclass
class Outcome:
    history: list[Event]
    aggregate: Any
    recorded: list[Event]
    error: Exception | None
    others: Sequence[tuple[list[Event], Any]] = ()

    def then(self, *expected: Fact | Event) -> Any:
        """The command recorded exactly ``expected``: the aggregate under test."""
        if self.error is not None:
            raise AssertionError(
                f"expected {len(expected)} event(s), but the command raised {_show(self.error)}"
            ) from self.error
        self._check(expected)
        return self.aggregate

    def then_error(self, error_class: type[Exception], message: str) -> Any:
        """The command raised ``error_class(message)`` and recorded nothing."""
        wanted = f"{error_class.__name__}({message!r})"
        if self.error is None:
            raise AssertionError(f"expected {wanted}, but the command raised nothing")
        if not isinstance(self.error, error_class) or str(self.error) != message:
            raise AssertionError(f"expected {wanted}, got {_show(self.error)}") from self.error
        self._check(())
        return self.aggregate

    def _check(self, expected: Iterable[Fact | Event]) -> None:
        wanted = self._built(expected)
        if [_signature(e) for e in self.recorded] != [_signature(e) for e in wanted]:
            lines = difflib.unified_diff(
                _render(wanted), _render(self.recorded), "expected", "recorded", lineterm="", n=99
            )
            raise AssertionError("the command recorded other events:\n" + "\n".join(lines))
        for history, aggregate in [(self.history, self.aggregate), *self.others]:
            if aggregate is None:
                continue
            replayed = _replay([*history, *(e for e in self.recorded if _of(e, aggregate))])
            if replayed != aggregate:
                lines = difflib.unified_diff(
                    pprint.pformat(vars(replayed)).splitlines(),
                    pprint.pformat(vars(aggregate)).splitlines(),
                    "from its events",
                    "after the command",
                    lineterm="",
                )
                raise AssertionError(
                    "the command changed the aggregate beyond its events:\n" + "\n".join(lines)
                )

    def _built(self, expected: Iterable[Fact | Event]) -> list[Event]:
        """Facts get the aggregate's id and the next version of their stream."""
        default_id = getattr(self.aggregate, "id", None)
        next_version: dict[Any, int] = {}
        for history, _ in [(self.history, None), *self.others]:
            for event in history:
                next_version[event.originator_id] = event.originator_version + 1
        built = []
        for item in expected:
            if isinstance(item, Fact):
                originator_id = item.data.get("originator_id", default_id)
                item = item.build(originator_id, next_version.get(originator_id, 1))
            next_version[item.originator_id] = item.originator_version + 1
            built.append(item)
        return built


def _aggregate_class(event_class: type) -> type:
    """The aggregate class an event class is declared in (``Order`` for ``Order.Placed``)."""
    owner: Any = sys.modules[event_class.__module__]
    for name in event_class.__qualname__.split(".")[:-1]:
        owner = getattr(owner, name, None)
    if not (isinstance(owner, type) and issubclass(owner, BaseAggregate)):
        raise TypeError(
            f"{event_class.__qualname__} is not declared in an aggregate class: "
            "give the fact its originator_topic"
        )
    return owner


def _replay(events: Iterable[Event]) -> Any:
    aggregate = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def _collect(aggregate: Any) -> list[Event]:
    return list(aggregate.collect_events()) if isinstance(aggregate, BaseAggregate) else []


def _of(event: Event, aggregate: Any) -> bool:
    return bool(event.originator_id == aggregate.id)


def _data(event: Event) -> dict[str, Any]:
    return {name: value for name, value in vars(event).items() if name != "timestamp"}


def _signature(event: Event) -> tuple[type, dict[str, Any]]:
    return type(event), _data(event)


def _render(events: Iterable[Event]) -> list[str]:
    lines = []
    for event in events:
        lines.append(type(event).__qualname__)
        lines.extend(f"    {name}={value!r}" for name, value in _data(event).items())
    return lines


def _show(error: Exception) -> str:
    return f"{type(error).__name__}({str(error)!r})"
