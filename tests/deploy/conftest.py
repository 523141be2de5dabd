from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Server


@pytest.fixture(scope="package")
def gru(repository: Path):
    """A `gru serve` for the deploy tests: Prometheus scrapes it, the dashboard is checked against it."""
    running = Server(repository).start()
    yield running
    running.stop()
