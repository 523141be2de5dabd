"""Optuna search: a reproducible handful of tiny real trials whose best config trains with `gru train`,
a time budget that bounds the search, and a written config that holds nothing the data decides."""

from __future__ import annotations

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
