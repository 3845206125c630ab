"""One instance id, one live worker: the guard against two copies of a worker sharing a
group instance id (`kernel.group_membership`, docs/adr/0031), on the kernel's own worker
(tests/kernel_example/batches.py). Why a worker has one, and how it comes back after
kill -9: that ADR."""

import uuid
from pathlib import Path

from kernel.group_membership import claim_path, group_instance_id, holder
from kernel.kafka import ensure_topics
from tests import processes
from tests.support import wait_for


async def test_a_second_copy_of_a_worker_with_the_same_instance_slot_refuses_to_start(
    kafka: str, tmp_path: Path
) -> None:
    """Two live members with one instance id would take the partitions from each other in
    turn (the local broker fences neither): the second copy on this machine stops."""
    topic = f"copies-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, {topic: 1})
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "BATCHES_TOPIC": topic,
        "BATCHES_GROUP_ID": f"copies-{uuid.uuid4().hex[:8]}",
        "BATCHES_DIR": str(tmp_path),
    }
    app = "tests.kernel_example.batches:app"
    first = processes.faust_worker("first", app, env, tmp_path)
    claim = claim_path(  # as the worker names its broker: Faust's URL
        f"kafka://{kafka}", env["BATCHES_GROUP_ID"], group_instance_id(env["BATCHES_GROUP_ID"], 0)
    )
    try:  # the second copy starts once the first holds the claim (else either may win)
        wait_for(lambda: holder(claim) == str(first.pid), timeout=60, message=first.log())
    except BaseException:
        first.stop()
        raise
    second = processes.faust_worker("second", app, env | {"WORKER_INSTANCE": "0"}, tmp_path)
    other_slot = processes.faust_worker("other", app, env | {"WORKER_INSTANCE": "1"}, tmp_path)
    try:
        second.popen.wait(timeout=60)
        assert second.popen.returncode != 0
        assert f"is in use by pid {first.pid}" in second.log(), second.log()
        assert first.alive() and other_slot.alive(), processes.logs(first, other_slot)
    finally:
        for worker in (first, second, other_slot):
            worker.stop()
