"""Static consumer group membership (KIP-345) for the workers (docs/adr/0031).

Each copy of a worker joins its group under a fixed instance id, ``<group>-<slot>``
(``WORKER_INSTANCE``). A copy restarted after a crash rejoins under the same id and gets
its partitions back at once: on Kafka without waiting for the session timeout and without
a rebalance, on the local broker at all (it never evicts a dead dynamic member, so a
restarted one would wait for partitions for ever).

The id must be unique among the copies that run: two live processes with one id take the
partitions from each other in turn (the local broker does not fence either). Nothing on
the broker tells a live holder of an id from a dead one, so the guard here is local: a
process holds a lock named after its broker, group and instance id for as long as it
lives (the kernel lets it go when the process dies, even by SIGKILL), and a second process
of this machine claiming the same id waits a little for it (a predecessor still stopping),
then refuses to start.
"""

import asyncio
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

CLAIMS_DIR = Path(tempfile.gettempdir()) / "cqrs-group-instances"
"""Where the locks live: one folder for the whole machine, whatever the working folder."""


class InstanceIdInUse(RuntimeError):
    """Another live process of this machine is the same member of the same group."""


def group_instance_id(group: str, slot: int) -> str:
    """The instance id of copy ``slot`` (0 to N-1) of the workers of ``group``."""
    return f"{group}-{slot}"


def claim_path(bootstrap_servers: str, group: str, instance_id: str) -> Path:
    cluster = hashlib.sha256(f"{bootstrap_servers}|{group}".encode()).hexdigest()[:16]
    return CLAIMS_DIR / f"{instance_id}.{cluster}.lock"


def try_claim(path: Path) -> IO[str] | None:
    """The open, locked claim file (keep it open: closing it lets the claim go), or None
    while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    claim = path.open("a+")
    try:
        fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        claim.close()
        return None
    claim.seek(0)
    claim.truncate()
    claim.write(f"{os.getpid()}\n")
    claim.flush()
    return claim


def holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


async def claim_instance_id(
    bootstrap_servers: str, group: str, instance_id: str, patience: float = 10.0
) -> IO[str]:
    """Claim ``instance_id`` of ``group`` on this machine for the life of the process.

    Waits up to ``patience`` seconds for a holder that is stopping; raises
    :class:`InstanceIdInUse` if it still holds the id then."""
    path = claim_path(bootstrap_servers, group, instance_id)
    deadline = time.monotonic() + patience
    warned = False
    while (claim := try_claim(path)) is None:
        if time.monotonic() >= deadline:
            raise InstanceIdInUse(
                f"consumer group {group!r}: instance id {instance_id!r} is in use by pid "
                f"{holder(path)} on this machine; give each running copy of a worker its "
                f"own WORKER_INSTANCE (0 to N-1)"
            )
        if not warned:
            log.warning(
                "consumer group %r: instance id %r is held by pid %s; waiting up to %.0fs",
                group,
                instance_id,
                holder(path),
                patience,
            )
            warned = True
        await asyncio.sleep(0.1)
    return claim
