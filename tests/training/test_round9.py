"""Red team round 9 of `gru train`: settings with a wrong value, and settings the data never reads, are
refused before any training, naming the key and the fix."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.config import load_config
from training.data import load_data
from training.defaults import resolve
from training.loop import fit


@pytest.mark.parametrize("override", ["optim.learning_rate=inf", "optim.learning_rate=.inf",
                                      "optim.weight_decay=-inf", "optim.grad_clip=.nan"])
def test_infinite_numbers_are_refused_naming_the_key(override: str) -> None:
    """Before: optim.learning_rate=inf was accepted and trained until the loss was nan at epoch 1."""
    key = override.partition("=")[0]
    with pytest.raises(ValueError, match=f"{key} must be a finite number"):
        load_config(None, [override])


@pytest.mark.parametrize("value", [".inf", "inf", "0", "-1", "nan"])
def test_a_time_budget_that_is_no_number_of_seconds_says_null_is_no_limit(value: str) -> None:
    """Before: optim.time_budget=.inf failed after loading the data with 'cannot convert float NaN to
    integer'; 0, -1 and nan said only 'Input should be greater than 0'."""
    with pytest.raises(ValueError, match="optim.time_budget must be a number of seconds above 0, or null"):
        load_config(None, [f"optim.time_budget={value}"])
    assert load_config(None, ["optim.time_budget=null"]).optim.time_budget is None
    assert load_config(None, ["optim.time_budget=1e9"]).optim.time_budget == 1e9


@pytest.mark.parametrize("text", ["model:\n  hidden_size: 8\noptim:\n  seed: 2\nmodel:\n  num_layers: 2\n",
                                  "model:\n  hidden_size: 8\n  hidden_size: 16\n"])
def test_a_key_written_twice_in_a_yaml_file_is_refused(tmp_path: Path, text: str) -> None:
    """Before: PyYAML kept the second `model:` section and dropped hidden_size 8 without a word."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"appears twice .* merge them into one at line \d"):
        load_config(path)


@pytest.mark.parametrize(("override", "message"), [
    ("data.task=regression", "data.task=regression: ItalyPowerDemand is a classification set"),
    ("data.path=train.csv", "data.path is read only with data.dataset=file"),
    ("data.horizon=5", "data.horizon is read for forecasts; this data is classification: drop data.horizon"),
    ("data.window=5", "data.window is read for forecasts and tagging split in time"),
])
def test_data_settings_the_data_never_reads_are_refused(override: str, message: str) -> None:
    """Before: each trained ItalyPowerDemand as classification and ignored the setting."""
    config = load_config(None, [override])
    with pytest.raises(ValueError, match=message):
        resolve(config, load_data(config.data))


def test_a_batch_larger_than_the_training_series_is_said() -> None:
    """Before: 'batch 100000' for 67 training series, and nothing said that each epoch is one batch."""
    config = load_config(None, ["optim.batch_size=100000"])
    _, lines = resolve(config, load_data(config.data))
    assert "optim.batch_size=100000 is more than the 67 training series: each epoch is one batch of all 67" \
        in lines


def test_members_that_cannot_fit_the_time_budget_are_refused_before_training(tmp_path: Path) -> None:
    """Before: optim.members=1000 trained member after member (105 in 120 s) past the time budget, toward
    a merged GRU of hidden size 128,000."""
    config = load_config(None, [f"run_dir={tmp_path}", "name=m", "progress=false", "optim.members=1000",
                                "optim.time_budget=30", "model.hidden_size=8"])
    with pytest.raises(ValueError, match=r"optim.members=1000: .* set optim.members to at most \d+, or raise "
                                         "--time-budget"):
        fit(config)
    assert not (tmp_path / "m" / "members").exists()


def test_ctrl_c_mid_run_says_how_to_resume_and_the_unfinished_run_is_not_exported(tmp_path: Path) -> None:
    """Before: SIGINT mid-epoch printed a 40-line traceback ending in torch's autograd engine."""
    command = [sys.executable, "-m", "gru_cli", "train", "--run-dir", str(tmp_path), "--name", "cut",
               "--no-progress", "--max-epochs", "5000", "--set", "optim.time_budget=null",
               "--set", "model.hidden_size=8", "--set", "optim.members=1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180  # the first epoch's end; minutes only on a machine shared with others
    while not (tmp_path / "cut" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "cut" / "last.pt").exists(), "no epoch finished in 180 s: nothing to interrupt"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("gru train: interrupted; to continue from the last finished "
                                            "epoch, run the same command with --name cut --resume")
    # before: the interrupted run's best epoch so far was exported without a word; last.pt failed with
    # "unexpected keyword argument 'optimizer'"
    for saved, message in (("checkpoint.pt", "is from a run that has not finished"),
                           ("last.pt", "is a run's resume state (for gru train --resume), not its model")):
        export = [sys.executable, "-m", "gru_cli", "export", "--checkpoint", str(tmp_path / "cut" / saved),
                  "--repository", str(tmp_path / "models"), "--name", "cut"]
        result = subprocess.run(export, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "models").exists()


def test_a_run_folder_that_holds_a_run_is_refused_unless_resumed_or_overwritten(tmp_path: Path) -> None:
    """Before: `--name a` again with another dataset wrote over run a's checkpoint and kept its ensemble
    members and tensorboard events beside the new run's, without a word; --overwrite deletes it first."""
    (tmp_path / "a" / "members" / "0").mkdir(parents=True)
    (tmp_path / "a" / "config.yaml").write_text("name: a\n")
    command = [sys.executable, "-m", "gru_cli", "train", "--run-dir", str(tmp_path), "--name", "a",
               "--dataset", "GunPoint"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"run folder {tmp_path / 'a'} holds a run already; choose another --name, continue it with " \
           "--resume" in result.stderr
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == ["config.yaml", "members"]
    tiny = ["--overwrite", "--max-epochs", "1", "--set", "model.hidden_size=8", "--set", "optim.members=1",
            "--set", "optim.crop=1"]
    result = subprocess.run(command + tiny, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a" / "checkpoint.pt").exists() and not (tmp_path / "a" / "members").exists()


def test_the_confusion_matrix_of_600_labels_is_drawn_in_seconds(tmp_path: Path) -> None:
    """Before: ConfusionMatrixDisplay wrote a count in each of 360,000 cells, and a 2-epoch run of 600
    classes with a 30 s time budget was still drawing after 10 minutes."""
    import numpy as np
    import pandas as pd
    from aeon.datasets import load_italy_power_demand

    from training.config import DataConfig
    from training.plots import confusion_matrix

    X, _ = load_italy_power_demand(split="train")  # 67 series of 24 steps, relabelled: 600 classes
    rows = [{"series_id": f"c{c}_{k}", "step": t, "value": X[(2 * c + k) % 67, 0, t], "label": f"class{c}"}
            for c in range(600) for k in range(2) for t in range(8)]
    pd.DataFrame(rows).to_csv(tmp_path / "many.csv", index=False)
    data = load_data(DataConfig(dataset="file", path=str(tmp_path / "many.csv"), task="classification"))
    begun = time.perf_counter()
    confusion_matrix(data, data.test.y, np.roll(data.test.y, 1), tmp_path / "confusion_matrix.png")
    assert time.perf_counter() - begun < 10 and (tmp_path / "confusion_matrix.png").stat().st_size > 0


def test_resume_of_a_run_that_is_not_there_is_refused(tmp_path: Path) -> None:
    """Before: `--resume` with a misspelt --name trained a new run from epoch 1, without a word."""
    command = [sys.executable, "-m", "gru_cli", "train", "--run-dir", str(tmp_path), "--name", "typo",
               "--resume"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"--resume: run folder {tmp_path / 'typo'} holds no run to continue" in result.stderr
    assert not (tmp_path / "typo").exists()
