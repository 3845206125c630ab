"""JSON log lines, one object a line, with the trace and correlation ids.

Each process's composition root calls ``configure_logging`` once: its root logger (and
uvicorn's, and Faust's, whose handlers it keeps) then writes JSON lines to stderr
(``cqrs run`` sends each process's output to ``var/log/<process>.log``), each with

- ``time``, ``level``, ``logger``, ``message``, ``process``;
- ``trace_id`` and ``span_id`` of the current span (``kernel.tracing``), when there is one;
- ``correlation_id`` of the message or command being handled (``kernel.metadata``);
- whatever the call passed as ``extra`` (a dead letter passes its message's ids).

Lines people look for (a saga's end) are logged at INFO by a ``milestones`` logger,
whatever the process's level (Faust's workers run at WARN).
"""

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from kernel.metadata import current_metadata
from kernel.tracing import ids_of_current_span, ids_of_headers

FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


class ContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``correlation_id`` and ``process`` to each record
    (what the call passed in ``extra`` wins)."""

    def __init__(self, process: str):
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context_fields().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        record.process_name = self.process
        return True


def context_fields() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span and ``correlation_id`` of the
    message or command being handled (those there are): what a line logged now carries,
    and what a line logged later about this moment passes as ``extra``."""
    fields = {}
    ids = ids_of_current_span()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    metadata = current_metadata()
    if metadata is not None:
        fields["correlation_id"] = metadata.correlation_id
    return fields


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        FIELDS,
        rename_fields={**RENAMED, "process_name": "process"},
        timestamp=False,
        json_ensure_ascii=False,
    )


def use_json(handler: logging.Handler, process: str) -> None:
    """Make ``handler`` write JSON lines with the context's ids."""
    handler.setFormatter(json_formatter())
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter(process))


_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(process: str, level: int = logging.INFO, *, take_root: bool = False) -> None:
    """JSON lines to stderr for the whole process. Call it once, from the composition
    root; calling it again only re-applies the format.

    The root logger gets a JSON handler (and ``level``) if it has no handler yet; with
    ``take_root`` (a Faust worker, whose root handlers Faust made), its handlers are
    made to write JSON instead. uvicorn's handlers write JSON too. A root that already
    has handlers someone else set up (pytest's, when an app is made in a test) is left
    alone."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
        root.setLevel(level)
        take_root = True
    if take_root:
        for handler in root.handlers:
            use_json(handler, process)
            # The loggers' levels decide (Faust sets its handler's to the worker's level,
            # which would drop the milestones' INFO lines).
            handler.setLevel(logging.NOTSET)
    for name in _UVICORN:
        for handler in logging.getLogger(name).handlers:
            use_json(handler, process)


def milestones(name: str) -> logging.Logger:
    """A logger for lines a person looks for (a saga's end): INFO, whatever the root's."""
    logger = logging.getLogger(f"milestones.{name}")
    logger.setLevel(logging.INFO)
    return logger


def message_fields(headers: Any) -> dict[str, str]:
    """``extra`` for a line about a consumed message: the trace, span and correlation
    ids its headers carry."""
    fields: dict[str, str] = {}
    headers = list(headers)
    ids = ids_of_headers(headers)
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    for key, value in headers:
        if key == "ce_correlationid":
            fields["correlation_id"] = bytes(value).decode(errors="replace")
            break
    return fields
