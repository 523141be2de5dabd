"""Optuna search: a reproducible handful of tiny real trials whose best config trains with `gru train`,
a time budget that bounds the search, a written config that holds nothing the data decides, and a study
shared by processes through a database or a journal file."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gru_cli import main
from training.checkpoint import Checkpoint
from training.config import load_config
from training.tune import tune


def _base(tmp_path: Path, name: str, epochs: int = 2) -> list[str]:
    return [f"run_dir={tmp_path}", f"name={name}", "progress=false", f"optim.max_epochs={epochs}"]


def test_search_is_reproducible_and_writes_a_usable_best_config(tmp_path: Path) -> None:
    first = tune(load_config(None, _base(tmp_path, "a")), trials=3)
    second = tune(load_config(None, _base(tmp_path, "b")), trials=3)
    assert first.best_params == second.best_params and first.best_value == second.best_value
    assert len(first.trials) == 3 and {"hidden_size", "optimizer", "grad_clip"} <= set(first.best_params)
    config = load_config(first.config_path)  # what `gru train --config` reads
    assert config.model.hidden_size == first.best_params["hidden_size"]
    assert config.optim.optimizer == first.best_params["optimizer"]
    assert (tmp_path / "a" / "tune_trials.json").exists()


def test_best_config_leaves_out_what_the_data_and_the_search_decide(tmp_path: Path) -> None:
    base = load_config(None, _base(tmp_path, "search") + ["optim.patience=7", "data.val_fraction=0.25"])
    result = tune(base, trials=2)
    raw = yaml.safe_load(result.config_path.read_text())
    assert not {"name", "run_dir", "progress"} & set(raw)
    assert not {"input_size", "task", "output_size", "window_scaling"} & set(raw["model"])
    assert "max_epochs" not in raw["optim"] and raw["optim"]["patience"] == 7  # the base's own choice
    assert raw["data"]["dataset"] == "ItalyPowerDemand" and raw["data"]["val_fraction"] == 0.25
    assert set(result.best_params) <= set(raw["model"]) | set(raw["optim"])
    # the same config on other data (12 features, 9 classes) takes its shapes from that data
    code = main(["train", "--config", str(result.config_path), "--dataset", "JapaneseVowels",
                 "--run-dir", str(tmp_path), "--name", "other", "--max-epochs", "1", "--no-progress",
                 "--set", "optim.plots=false", "--set", "optim.tensorboard=false"])
    assert code == 0
    trained = Checkpoint.load(tmp_path / "other" / "checkpoint.pt").config.model
    assert trained.input_size == 12 and trained.output_size == 9


def test_timeout_bounds_the_search(tmp_path: Path) -> None:
    started = time.monotonic()
    result = tune(load_config(None, _base(tmp_path, "quick", epochs=1)), trials=None, timeout=3)
    assert len(result.trials) >= 1 and time.monotonic() - started < 30
    assert result.trials[-1]["state"] in {"COMPLETE", "PRUNED"}


def test_a_trial_still_running_at_the_timeout_is_stopped(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="every trial was pruned or failed; raise --trials, --timeout"):
        tune(load_config(None, _base(tmp_path, "long", epochs=10_000)), trials=5, timeout=2)
    assert time.monotonic() - started < 30  # 10,000 epochs would take far longer


def _tune_process(tmp_path: Path, storage: str, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "gru_cli", "tune", "--storage", storage, "--study", "shared",
               "--run-dir", str(tmp_path), "--max-epochs", "2", "--no-progress", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_share_one_study(tmp_path: Path) -> None:
    """Two real `gru tune` processes on one SQLite study: one search of 6 trials between them, every
    trial number once, each process printing a line per trial it ran and the same best."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    processes = [_tune_process(tmp_path, storage, "--trials", "6") for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 6 <= len(finished) <= 7  # the callback stops each process after the 6th; one may be running
    printed = [re.findall(r"^trial (\d+): (?:validation loss|pruned)", out, re.M) for out, _ in outputs]
    assert all(printed), "each process ran trials of the study"
    numbers = [int(n) for lines in printed for n in lines]
    assert sorted(numbers) == [t.number for t in finished]  # each trial ran once, in one process
    assert all("data: " not in out for out, _ in outputs)  # no per-trial run description
    # Each prints the study's best when it ends: the one ending last saw every trial (which one that is
    # depends on the machine), the other's may be older and higher.
    best = [float(re.search(r"best validation loss (\S+)", out)[1]) for out, _ in outputs]
    assert min(best) == pytest.approx(study.best_value, abs=1e-4)
    assert (tmp_path / "shared" / "best_config.yaml").exists()  # the study's name is the run's


def test_a_journal_file_holds_a_study_too(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    first = tune(load_config(None, _base(tmp_path, "j", epochs=1)), trials=2, storage=f"journal:{journal}",
                 study_name="j")
    again = tune(load_config(None, _base(tmp_path, "j", epochs=1)), trials=3, storage=f"journal:{journal}",
                 study_name="j")
    assert len(first.trials) == 2 and len(again.trials) == 3  # the second joined the first's study
    assert journal.stat().st_size > 0


def test_study_needs_a_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--study", "x", "--run-dir", str(tmp_path)]) == 2
    assert "--study names a study in --storage" in capsys.readouterr().err



def test_processes_creating_one_database_at_once_all_join_it(tmp_path: Path) -> None:
    """Optuna's first connection creates the tables; four processes doing it at once used to fail about
    half the time (a UNIQUE constraint on alembic_version): open_storage retries."""
    storage = f"sqlite:///{tmp_path / 'new.db'}"
    code = ("import sys, optuna; from training.tune import open_storage; "
            "optuna.create_study(storage=open_storage(sys.argv[1]), study_name='s', load_if_exists=True)")
    processes = [subprocess.Popen([sys.executable, "-c", code, storage], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], errors
