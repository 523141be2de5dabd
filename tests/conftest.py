from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Server, train_tiny


@pytest.fixture(scope="session")
def italy_run(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny(tmp_path_factory.mktemp("runs"), "italy")


@pytest.fixture(scope="session")
def airline_run(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny(tmp_path_factory.mktemp("runs"), "airline", "data.dataset=Airline",
                      "optim.max_epochs=15")


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory, italy_run, airline_run) -> Path:
    """A model repository with one classification and one forecasting bundle."""
    from export.bundle import export_checkpoint

    root = tmp_path_factory.mktemp("repo") / "models"
    export_checkpoint(italy_run.checkpoint, root, "italy")
    export_checkpoint(airline_run.checkpoint, root, "airline")
    return root


@pytest.fixture(scope="session")
def server(repository: Path):
    running = Server(repository).start()
    yield running
    running.stop()
