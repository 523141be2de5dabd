"""Optuna search: a reproducible handful of tiny real trials whose best config trains with `gru train`."""

from __future__ import annotations

from pathlib import Path

from training.config import load_config
from training.tune import tune


def _base(tmp_path: Path, name: str) -> list[str]:
    return [f"run_dir={tmp_path}", f"name={name}", "progress=false", "optim.max_epochs=2"]


def test_search_is_reproducible_and_writes_a_usable_best_config(tmp_path: Path) -> None:
    first = tune(load_config(None, _base(tmp_path, "a")), trials=3)
    second = tune(load_config(None, _base(tmp_path, "b")), trials=3)
    assert first.best_params == second.best_params and first.best_value == second.best_value
    assert len(first.trials) == 3 and {"hidden_size", "optimizer", "grad_clip"} <= set(first.best_params)
    config = load_config(first.config_path)  # what `gru train --config` reads
    assert config.model.hidden_size == first.best_params["hidden_size"]
    assert config.optim.optimizer == first.best_params["optimizer"]
    assert config.name == "a" and config.optim.max_epochs == 2
    assert (tmp_path / "a" / "tune_trials.json").exists()
