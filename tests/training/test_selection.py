"""optim.crop "auto" (training/selection.py): on long classification series the run compares both
candidates by cross-validation on its training series, keeps the winner and says so; elsewhere nothing is
compared; a resumed run keeps the first start's choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from training.config import DataConfig, TrainConfig, load_config
from training.data import load_data
from training.loop import fit
from training.selection import folds

TINY = ["model.hidden_size=8", "optim.max_epochs=3", "optim.members=1", "optim.time_budget=null",
        "optim.plots=false", "optim.tensorboard=false", "progress=false"]


def _write(path: Path, series: int, steps: int, seed: int) -> Path:
    """Three classes of noisy series, told apart by where a bump sits and how wide it is."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(series):
        label = s % 3
        values = rng.normal(0, 0.3, steps)
        start = rng.integers(0, steps // 2)
        values[start:start + 10 * (label + 1)] += 2.0
        frames.append(pd.DataFrame({"series_id": f"s{s}", "step": np.arange(steps), "label": f"c{label}",
                                    "value": values}))
    pd.concat(frames).to_csv(path, index=False)
    return path


def _config(tmp_path: Path, *extra: str) -> TrainConfig:
    return load_config(None, ["data.dataset=file", f"data.path={tmp_path / 'train.csv'}",
                              f"data.test_path={tmp_path / 'test.csv'}", "data.task=classification",
                              f"run_dir={tmp_path}", "name=run", *TINY, *extra])


def _train(tmp_path: Path, steps: int, *extra: str, series: int = 30) -> tuple[object, str]:
    _write(tmp_path / "train.csv", series, steps, 0)
    _write(tmp_path / "test.csv", 9, steps, 1)
    return fit(_config(tmp_path, *extra)), str(tmp_path / "run")


def test_long_series_compare_crops_by_cross_validation_and_keep_the_winner(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, run = _train(tmp_path, 160, series=30)
    right, loss = {}, {}
    for share in ("1", "0.8"):
        runs = [json.loads((Path(run) / "selection" / f"crop-{share}" / str(fold) / "test_metrics.json")
                           .read_text()) for fold in (0, 1)]
        right[share] = sum(round(15 * metrics["accuracy"]) for metrics in runs)  # 15 series in each part
        loss[share] = sum(metrics["loss"] for metrics in runs)
    best = min(("1", "0.8"), key=lambda share: (-right[share], loss[share]))
    assert yaml.safe_load((Path(run) / "config.yaml").read_text())["optim"]["crop"] == float(best)
    candidate = yaml.safe_load((Path(run) / "selection" / "crop-0.8" / "1" / "config.yaml").read_text())
    assert candidate["optim"]["crop"] == 0.8 and candidate["model"]["hidden_size"] == 8  # the run's settings
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("optim.crop="))
    assert line.startswith(f"optim.crop={best} (auto: 2-fold cross-validation on the 30 training series, "
                           f"accuracy no crops {right['1'] / 30:.3f} ")
    assert line.endswith("s)") and "4 runs in" in line


@pytest.mark.parametrize(("steps", "series", "extra", "crop"), [
    (40, 30, [], 1.0),  # short series
    (160, 27, [], 1.0),  # too few series to tell
    (160, 30, ["optim.crop=0.8"], 0.8),  # set by the user
    (160, 30, ["optim.final_fit=false"], 1.0)])  # the validation series stop the run early
def test_elsewhere_nothing_is_compared(tmp_path: Path, steps: int, series: int, extra: list[str],
                                       crop: float) -> None:
    _, run = _train(tmp_path, steps, *extra, series=series)
    assert not (Path(run) / "selection").exists()
    assert yaml.safe_load((Path(run) / "config.yaml").read_text())["optim"]["crop"] == crop


def test_a_resumed_run_keeps_the_choice_without_comparing_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, run = _train(tmp_path, 160)
    chosen = yaml.safe_load((Path(run) / "config.yaml").read_text())["optim"]["crop"]
    candidates = {path: path.stat().st_mtime_ns for path in (Path(run) / "selection").rglob("checkpoint.pt")}
    capsys.readouterr()
    fit(_config(tmp_path), resume=True)
    assert f"optim.crop={chosen:g} (as chosen when the interrupted run started)" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in candidates} == candidates


def test_the_folds_cover_a_stratified_sample_of_at_most_200_series_once(tmp_path: Path) -> None:
    _write(tmp_path / "train.csv", 300, 20, 0)
    data = load_data(DataConfig(dataset="file", path=str(tmp_path / "train.csv"), task="classification"))
    parts = folds(data)
    scored = [part.test for part in parts]
    assert [len(split) for split in scored] == [len(part.train) for part in parts] == [100, 100]
    assert all(sorted(np.bincount(split.y)) == [33, 33, 34] for split in scored)  # classes in proportion
    together = np.concatenate([split.X for split in scored])
    assert len(np.unique(together.reshape(len(together), -1), axis=0)) == 200  # no series scored twice
