"""Errors every command service maps to HTTP the same way."""


class DomainError(Exception):
    """A command the aggregate's current state forbids (HTTP 409)."""


class NotFound(Exception):
    """No aggregate with that id (HTTP 404)."""


class ApplicationClosed(RuntimeError):
    """The service is shutting down and takes no more commands (HTTP 503, retry)."""
