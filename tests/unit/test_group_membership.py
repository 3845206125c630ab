"""The workers' group instance ids, and the claim that keeps one id to one process."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kernel import group_membership
from kernel.group_membership import InstanceIdInUse, claim_instance_id, group_instance_id
from kernel.settings import KafkaSettings
from kernel.streams import faust_app
from tests.support import wait_for

BROKER = "kafka://127.0.0.1:9092"


@pytest.fixture(autouse=True)
def claims_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(group_membership, "CLAIMS_DIR", tmp_path / "claims")
    return tmp_path / "claims"


def test_a_worker_app_is_a_static_member_named_after_its_group_and_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_INSTANCE", "2")
    monkeypatch.setenv("KAFKA_SESSION_TIMEOUT", "45")
    app = faust_app("orders-saga", KafkaSettings(), str(tmp_path))
    assert app.conf.consumer_group_instance_id == "orders-saga-2"
    assert app.conf.broker_session_timeout == 45.0
    assert group_instance_id("projections", 0) == "projections-0"


async def test_a_second_claim_of_an_instance_id_fails_while_the_first_holds_it() -> None:
    first = await claim_instance_id(BROKER, "orders-saga", "orders-saga-0")
    with pytest.raises(InstanceIdInUse, match=f"in use by pid {os.getpid()}"):
        await claim_instance_id(BROKER, "orders-saga", "orders-saga-0", patience=0.3)
    # another slot, another group or another broker is another member
    others = [
        await claim_instance_id(BROKER, "orders-saga", "orders-saga-1", patience=0),
        await claim_instance_id(BROKER, "kitchen-saga", "orders-saga-0", patience=0),
        await claim_instance_id("kafka://127.0.0.1:9093", "orders-saga", "orders-saga-0", 0),
    ]
    first.close()  # the holder stops
    again = await claim_instance_id(BROKER, "orders-saga", "orders-saga-0", patience=0)
    for claim in [again, *others]:
        claim.close()


def test_the_claim_of_a_process_killed_with_sigkill_is_free_at_once(claims_dir: Path) -> None:
    holder_code = (
        "import asyncio, sys, time\n"
        "from kernel import group_membership as m\n"
        f"m.CLAIMS_DIR = m.Path({str(claims_dir)!r})\n"
        f"claim = asyncio.run(m.claim_instance_id({BROKER!r}, 'g', 'g-0'))\n"
        "print('claimed', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "claimed\n"
        with pytest.raises(InstanceIdInUse, match=f"pid {holder.pid}"):
            asyncio.run(claim_instance_id(BROKER, "g", "g-0", patience=0))
        os.kill(holder.pid, signal.SIGKILL)  # by its PID
        wait_for(lambda: holder.poll() is not None, timeout=10)
        asyncio.run(claim_instance_id(BROKER, "g", "g-0", patience=0)).close()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
