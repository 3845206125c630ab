"""The thread that keeps idempotent requests' answers: a write the store refuses is
tried again, and one it keeps refusing does not stop the answers after it.

A stand-in for the store's ``record_answers`` (this is the keeper's retry logic alone;
tests/integration/test_idempotency.py runs it on real stores)."""

import threading
from typing import Any, cast

from kernel.idempotency import AnswerKeeper
from kernel.store import SchemaProcessRecorder
from tests.support import wait_for

ANSWER = ("key-1", 201, "application/json", b"{}")


class Store:
    """Refuses the first ``refusals`` writes, then keeps what it is given."""

    def __init__(self, refusals: int | None):
        self.refusals = refusals  # None: every write
        self.kept: list[Any] = []
        self.tries = 0
        self._lock = threading.Lock()

    def record_answers(self, answers: list[Any]) -> None:
        with self._lock:
            self.tries += 1
            if self.refusals is None or self.tries <= self.refusals:
                raise ConnectionError("the store is away")
            self.kept.extend(answers)


def keeper(store: Store, retry_for: float) -> AnswerKeeper:
    return AnswerKeeper(cast(SchemaProcessRecorder, store), retry_for=retry_for)


def test_a_write_the_store_refuses_is_tried_again_until_it_is_kept():
    store = Store(refusals=3)
    answers = keeper(store, retry_for=30)

    answers.keep(*ANSWER)

    wait_for(lambda: store.kept == [ANSWER], timeout=10)
    assert store.tries == 4
    answers.close()


def test_answers_the_store_keeps_refusing_are_given_up_and_later_ones_still_kept(caplog):
    store = Store(refusals=None)
    answers = keeper(store, retry_for=0.3)
    answers.keep(*ANSWER)
    wait_for(lambda: "will be told the answer was lost" in caplog.text, timeout=10)
    assert store.tries > 1  # tried again before giving up

    store.refusals = 0  # the store is back
    later = ("key-2", 200, "application/json", b"[]")
    answers.keep(*later)

    wait_for(lambda: store.kept == [later], timeout=10)
    answers.close()
