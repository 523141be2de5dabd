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


@pytest.fixture(scope="session")
def vowels_uni_run(tmp_path_factory: pytest.TempPathFactory):
    """JapaneseVowels (ragged, 12 channels), 2 layers, 3 steps per GRU step and pooled readouts: the
    state carries an unfinished patch and running pools."""
    return train_tiny(tmp_path_factory.mktemp("runs"), "vowels_uni", "data.dataset=JapaneseVowels",
                      "model.num_layers=2", "model.patch=3", "optim.max_epochs=2")


@pytest.fixture(scope="session")
def vowels_bi_run(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny(tmp_path_factory.mktemp("runs"), "vowels_bi", "data.dataset=JapaneseVowels",
                      "model.num_layers=2", "model.bidirectional=true", "optim.max_epochs=2")


@pytest.fixture(scope="session")
def regimes_run(tmp_path_factory: pytest.TempPathFactory):
    """Per-step tagging on SyntheticRegimes."""
    return train_tiny(tmp_path_factory.mktemp("runs"), "regimes", "data.dataset=SyntheticRegimes",
                      "optim.max_epochs=3")


@pytest.fixture(scope="session")
def ragged_repository(tmp_path_factory: pytest.TempPathFactory, vowels_uni_run, vowels_bi_run,
                      regimes_run, airline_run) -> Path:
    """Bundles for ragged batches and streaming: uni- and bidirectional vowels, regime tagging, and
    the window-scaled airline forecaster (which must refuse streaming)."""
    from export.bundle import export_checkpoint

    root = tmp_path_factory.mktemp("ragged") / "models"
    for run, name in [(vowels_uni_run, "vowels_uni"), (vowels_bi_run, "vowels_bi"),
                      (regimes_run, "regimes"), (airline_run, "airline")]:
        export_checkpoint(run.checkpoint, root, name)
    return root


@pytest.fixture(scope="session")
def stream_server(ragged_repository: Path):
    """Small session limits so that eviction and idle expiry can be seen quickly; idle long enough that a
    loaded machine's slow requests between two chunks of one session do not expire it."""
    running = Server(ragged_repository, GRU_MAX_SESSIONS="2", GRU_SESSION_IDLE_SECONDS="4",
                     GRU_STATE_SECRET="test-secret-0123456789abcdef").start()
    yield running
    running.stop()
