"""The tallies Application: its commands go through the kernel's group commit."""

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from kernel.application import ServiceApplication
from kernel.errors import NotFound
from kernel.group_commit import command
from tests.kernel_example.domain import Tally


@dataclass(frozen=True)
class Saved:
    """What a command returns: the tally's new version and its log position."""

    tally_id: UUID
    version: int
    position: int


class TalliesApplication(ServiceApplication):
    name = "tallies"  # table names: tallies_events, tallies_tracking

    @command
    def start_tally(self, name: str, unit: str = "items") -> Saved:
        """Reads nothing (it joins the open batch at once); a name taken is a conflict."""
        return self._save(Tally(name, unit))

    @command
    def add_to_tally(self, name: str, amount: int) -> Saved:
        tally = self.get_tally(name)
        tally.add(amount)
        return self._save(tally)

    @command
    def close_tally(self, name: str, reason: str) -> Saved:
        tally = self.get_tally(name)
        tally.close(reason)
        return self._save(tally)

    def get_tally(self, name: str) -> Tally:
        try:
            tally: Tally = self.repository.get(Tally.create_id(name))
        except AggregateNotFoundError:
            raise NotFound(f"tally {name} not found") from None
        return tally

    def _save(self, tally: Tally) -> Saved:
        recordings = self.save(tally)
        return Saved(tally.id, tally.version, recordings[-1].notification.id)
