"""A saga worker is defined by its reactions (`kernel.saga.saga_worker`)."""

import pytest

from kernel.saga import saga_worker
from tests.kernel_example.application import TalliesApplication


def test_a_saga_worker_without_reactions_is_refused_at_its_definition() -> None:
    with pytest.raises(ValueError, match="tallies-saga has no reactions"):
        saga_worker("tallies", TalliesApplication, [])
