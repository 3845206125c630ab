"""The Faust worker the kernel's apps run with (``kernel.streams.Worker``)."""

import logging
from collections.abc import Iterator

import pytest

from kernel.settings import KafkaSettings
from kernel.streams import faust_app


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.handlers = [logging.StreamHandler(), *root.handlers]  # Faust sets the first's level
    yield root
    root.setLevel(level)
    root.handlers = handlers


def test_at_the_default_level_the_worker_builds_no_debug_records(root_logger, tmp_path):
    """Faust's own worker spins a terminal spinner on every log record: it sets the root
    logger to DEBUG, so every library's debug message is built (several per fetch)."""
    app = faust_app("worker-test", KafkaSettings(), str(tmp_path))
    worker = app.conf.Worker(app, loglevel="WARN")

    worker.on_setup_root_logger(root_logger, logging.WARNING)

    assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    assert not [h for h in root_logger.handlers if type(h).__name__ == "SpinnerHandler"]
