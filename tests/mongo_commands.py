"""PyMongo command monitoring for tests that count what a component sends the server."""

from pymongo import monitoring


class CommandCounter(monitoring.CommandListener):
    """Records (command name, collection) of every command a client starts."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        self.commands.append((name, str(event.command.get(name))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
