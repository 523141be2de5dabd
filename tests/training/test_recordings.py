"""Tagging from a few long recordings (training/data/recordings.py): a file of one recording, without an
id or a step column, is split in time; no training or validation step reaches into the test part; the
test reads the whole recording and counts only its held-out steps; a model trains from such a file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import DataConfig, load_config
from training.data import load_data
from training.data.dataset import PAD_LABEL
from training.data.synthetic import REGIMES, regime_sequence


def _recording(path: Path, steps: int, seed: int = 0) -> Path:
    """Regime segments one after another, as one sensor's export: a value, the step's own index as a
    second column (to see where each window comes from) and the label; no id, no step column."""
    rng = np.random.default_rng(seed)
    values, labels = [], []
    while sum(map(len, labels)) < steps:
        x, y = regime_sequence(rng)
        values.append(x[:, 0])
        labels.append(y)
    frame = pd.DataFrame({"value": np.concatenate(values)[:steps], "index": np.arange(steps, dtype=float),
                          "label": [REGIMES[i] for i in np.concatenate(labels)[:steps]]})
    frame.to_csv(path, index=False)
    return path


def _config(path: Path, **kwargs) -> DataConfig:
    return DataConfig(dataset="file", path=str(path), task="tagging", **kwargs)


def test_one_recording_is_split_in_time_and_no_training_step_reaches_the_test(tmp_path: Path) -> None:
    n = 1_000
    data = load_data(_config(_recording(tmp_path / "rec.csv", n), window=64))
    assert any("no 'series_id' column" in note for note in data.notes)
    assert any("rows are in time order" in note for note in data.notes)
    assert any(note.startswith("split: in time (1 recording(s), fewer than 10): test the last 20% of each")
               for note in data.notes)
    test_start = n - math.ceil(n * 0.2)
    val_start = test_start - math.ceil(test_start * 0.2)
    index = data.feature_names.index("index")

    def seen(split) -> np.ndarray:  # the step indices each split's labelled steps read
        return np.concatenate([split.X[i, : split.lengths[i], index] for i in range(len(split))])

    assert seen(data.train).max() == val_start - 1 and seen(data.train).min() == 0
    assert seen(data.val).min() == val_start and seen(data.val).max() == test_start - 1
    assert data.train.lengths.max() == 64 and data.val.lengths.max() == 64
    assert (data.train.y[data.train.y != PAD_LABEL] >= 0).all()
    assert len(data.test) == 1 and data.test.lengths[0] == n  # read whole, from the start
    labelled = np.flatnonzero(data.test.y[0] != PAD_LABEL)
    assert labelled.min() == test_start and labelled.size == n - test_start


def test_the_run_counts_the_windows_cut_from_recordings_as_windows(tmp_path: Path) -> None:
    """A recording split in time trains on windows: "28000 training series, lengths 32-32" read as a
    misread file. Recordings held out whole are still series."""
    from training.defaults import resolve

    path = _recording(tmp_path / "rec.csv", 1_000)
    config = load_config(None, ["data.dataset=file", f"data.path={path}", "data.task=tagging",
                                "data.window=64"])
    data = load_data(config.data)
    _, lines = resolve(config, data)  # tagging trains a final fit: training and validation windows
    windows = len(data.train) + len(data.val)
    assert any(line.startswith(f"data: {windows} training windows, lengths 64-64") for line in lines), lines
    frames = [pd.read_csv(_recording(tmp_path / f"{i}.csv", 40, seed=i)).assign(series_id=f"r{i}")
              for i in range(10)]
    pd.concat(frames).to_csv(tmp_path / "ten.csv", index=False)
    config = load_config(None, ["data.dataset=file", f"data.path={tmp_path / 'ten.csv'}",
                                "data.task=tagging"])
    data = load_data(config.data)
    _, lines = resolve(config, data)
    series = len(data.train) + len(data.val)
    assert any(line.startswith(f"data: {series} training series, lengths 40-40") for line in lines), lines


def test_a_test_file_is_the_test_and_the_training_file_gives_training_and_validation(tmp_path: Path) -> None:
    data = load_data(_config(_recording(tmp_path / "a.csv", 600), window=50,
                             test_path=str(_recording(tmp_path / "b.csv", 300, seed=1))))
    assert data.test.lengths.tolist() == [300] and (data.test.y[0] != PAD_LABEL).all()
    assert data.label_names == sorted(REGIMES)
    index = data.feature_names.index("index")
    assert data.val.X[:, :, index].max() == 599 and data.train.X[:, :, index].max() < 480


def test_ten_recordings_or_more_are_held_out_whole(tmp_path: Path) -> None:
    frames = [pd.read_csv(_recording(tmp_path / f"{i}.csv", 40 + i, seed=i)).assign(series_id=f"r{i}")
              for i in range(10)]
    pd.concat(frames).to_csv(tmp_path / "ten.csv", index=False)
    data = load_data(_config(tmp_path / "ten.csv"))
    assert not any(note.startswith("split: in time") for note in data.notes)
    assert len(data.train) + len(data.val) + len(data.test) == 10
    assert all((split.y[i, : split.lengths[i]] != PAD_LABEL).all()
               for split in (data.train, data.val, data.test) for i in range(len(split)))


def test_a_recording_too_short_to_split_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="recording 0 has 2 steps: too few to split in time.*data.test_path"):
        load_data(_config(_recording(tmp_path / "short.csv", 2)))


def test_the_window_length_is_chosen_on_the_validation_steps_and_kept(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    import yaml

    from training.data.recordings import WIDTHS
    from training.loop import fit

    path = _recording(tmp_path / "rec.csv", 800)
    result = fit(load_config(None, [
        "data.dataset=file", f"data.path={path}", "data.task=tagging", "data.feature_columns=[value]",
        f"run_dir={tmp_path}", "name=rec", "optim.max_epochs=3", "model.hidden_size=8", "optim.plots=true",
        "optim.tensorboard=false"]))
    assert 0.0 <= result.test_metrics["accuracy"] <= 1.0
    # the scored steps' confusion matrix (was: a forecast plot of the whole recording, 29 s at 1M steps)
    run = tmp_path / "rec"
    assert (run / "confusion_matrix.png").exists() and not (run / "forecast.png").exists()
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("data.window="))
    chosen = int(line.split()[0].split("=")[1])
    assert chosen in WIDTHS and "compared on the 128 validation steps" in line  # 800 - 160 = 640, 20 %
    saved = yaml.safe_load((tmp_path / "rec" / "config.yaml").read_text())
    assert saved["data"]["window"] == chosen


def _window_runs(tmp_path: Path, steps: int, epochs: int,
                 capsys: pytest.CaptureFixture) -> tuple[list[float], list[float], str]:
    """A recording trained with data.window unset, then again with the window it chose: each run's training
    losses per epoch, and what the first printed."""
    from training.loop import fit

    path = _recording(tmp_path / "rec.csv", steps)
    common = ["data.dataset=file", f"data.path={path}", "data.task=tagging", "data.feature_columns=[value]",
              f"run_dir={tmp_path}", f"optim.max_epochs={epochs}", "model.hidden_size=8", "optim.plots=false",
              "optim.tensorboard=false"]
    chosen: list[float] = []
    fit(load_config(None, [*common, "name=chosen"]),
        on_epoch=lambda _, record: chosen.append(record["train_loss"]))
    out = capsys.readouterr().out
    width = int(next(line for line in out.splitlines() if line.startswith("data.window=")).split()[0][12:])
    fixed: list[float] = []
    fit(load_config(None, [*common, "name=fixed", f"data.window={width}"]),
        on_epoch=lambda _, record: fixed.append(record["train_loss"]))
    assert "starts f" not in capsys.readouterr().out
    return chosen, fixed, out.replace(f"{tmp_path}/chosen/selection/window-{width}/0/checkpoint.pt", "WINNER")


def test_the_final_model_starts_from_the_winning_window_candidate(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """GunPoint played as recordings, seed 2: the winning candidate scored 0.905 on the validation steps,
    the final model, from a fresh start, stayed at the majority label (0.4907). It now starts from the
    winner: its first epoch fits the training windows better than a fresh start at the same length."""
    warm, fresh, out = _window_runs(tmp_path, 1_500, 5, capsys)
    assert "model: starts from the window comparison's winner (WINNER, validation loss" in out
    assert warm[0] < fresh[0] - 0.02, (warm, fresh)


def test_a_winner_no_better_than_the_label_frequencies_is_not_started_from(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """ArrowHead played as recordings, seed 0: the winner's validation loss (1.15) was above ln 3 and the
    final model started from it scored 0.546 against 0.689 from a fresh start. Such a winner is passed
    over: the run trains as one given its window would (3 epochs here: the winner scores ~ln 3)."""
    gated, fresh, out = _window_runs(tmp_path, 800, 3, capsys)
    assert "model: starts fresh (the window comparison's winner, validation loss" in out
    assert "does not beat the label frequencies'" in out and "WINNER" not in out
    assert gated == fresh


def test_a_resumed_run_keeps_the_window_without_comparing_again(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    import yaml

    from training.loop import fit

    path = _recording(tmp_path / "rec.csv", 600)
    config = load_config(None, [
        "data.dataset=file", f"data.path={path}", "data.task=tagging", f"run_dir={tmp_path}", "name=rec",
        "optim.max_epochs=2", "model.hidden_size=8", "optim.plots=false", "optim.tensorboard=false"])
    fit(config)
    chosen = yaml.safe_load((tmp_path / "rec" / "config.yaml").read_text())["data"]["window"]
    candidates = {p: p.stat().st_mtime_ns for p in (tmp_path / "rec" / "selection").rglob("checkpoint.pt")}
    assert len(candidates) == 2
    capsys.readouterr()
    fit(config, resume=True)
    assert f"data.window={chosen} (as chosen when the interrupted run started)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in candidates} == candidates


def test_a_label_only_in_the_test_steps_is_said(tmp_path: Path) -> None:
    path = _recording(tmp_path / "rec.csv", 500)
    frame = pd.read_csv(path)
    frame.loc[450:, "label"] = "late"  # only in the last 20 %: the test part
    frame.to_csv(path, index=False)
    data = load_data(_config(path, window=32))
    assert any("label(s) 'late' occur in the test steps but in no training" in note
               for note in data.notes)
    whole = load_data(_config(_recording(tmp_path / "other.csv", 500), window=32))
    assert not any("in no training or validation step" in note for note in whole.notes)


def test_without_a_final_fit_the_window_is_not_compared_and_it_is_said(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    import yaml

    from training.loop import fit

    path = _recording(tmp_path / "rec.csv", 600)
    fit(load_config(None, [
        "data.dataset=file", f"data.path={path}", "data.task=tagging", f"run_dir={tmp_path}", "name=rec",
        "optim.final_fit=false", "optim.max_epochs=1", "model.hidden_size=8", "optim.plots=false",
        "optim.tensorboard=false"]))
    assert ("data.window=256 (default: window lengths are compared only in a single process with a final "
            "fit, not with optim.final_fit=false; set data.window to choose)") in capsys.readouterr().out
    assert not (tmp_path / "rec" / "selection").exists()
    assert yaml.safe_load((tmp_path / "rec" / "config.yaml").read_text())["data"]["window"] == 256


def test_a_recording_of_three_steps_is_refused_not_trained_into_a_nan_loss(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"recording 0 has 3 steps: too few to split in time into training "
                                         r"\(2 steps at least\)"):
        load_data(_config(_recording(tmp_path / "three.csv", 3)))
    pd.DataFrame({"value": [0.0, 0.1, 2.0, 2.1, 0.0], "label": ["idle", "idle", "high", "high", "idle"]}
                 ).to_csv(tmp_path / "five.csv", index=False)
    assert load_data(_config(tmp_path / "five.csv")).train.lengths.sum() == 3


@pytest.mark.parametrize("task", ["tagging", "classification"])
def test_a_split_is_scored_in_chunks_as_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                task: str) -> None:
    """The windows of a long recording are scored EVAL_STEPS steps at a time (at once, 1,000,000 steps took
    14 GB): the same accuracy and loss as one batch, uneven chunks included."""
    import torch

    from training import defaults, loop
    from training.model import GRUModel

    path = _recording(tmp_path / "rec.csv", 700)
    overrides = [f"data.path={path}", "data.task=tagging", "data.window=40"] if task == "tagging" else \
        ["data.dataset=SyntheticRegimes"]
    config = load_config(None, ["data.dataset=file", *overrides, "model.hidden_size=8"])
    data = load_data(config.data)
    torch.manual_seed(0)
    model = GRUModel(defaults.resolve(config, data)[0].model)
    model.normaliser.fit(data.train.X, None, lengths=data.train.lengths)
    whole = loop.evaluate(model, data.train, data)
    monkeypatch.setattr(loop, "EVAL_STEPS", 7 * data.train.X.shape[1])  # 7 rows a chunk, the last fewer
    assert len(data.train) % 7
    chunked = loop.evaluate(model, data.train, data)
    assert chunked["accuracy"] == whole["accuracy"] and chunked["macro_f1"] == whole["macro_f1"]
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_a_recording_longer_than_the_checked_steps_exports_checked_at_those(tmp_path: Path) -> None:
    """The test recording is the longest sequence the run read: traced and checked at its length, a
    1,000,000-step one took 24 GB and was killed; the service still accepts 4 x its length."""
    from export.bundle import CHECKED_STEPS, export_checkpoint
    from training.loop import fit

    steps = CHECKED_STEPS + 500
    path = _recording(tmp_path / "rec.csv", steps)
    result = fit(load_config(None, [
        "data.dataset=file", f"data.path={path}", "data.task=tagging", "data.window=32",
        f"run_dir={tmp_path}", "name=rec", "optim.max_epochs=1", "model.hidden_size=8", "optim.plots=false",
        "optim.tensorboard=false"]))
    manifest = export_checkpoint(result.checkpoint, tmp_path / "models", "rec").manifest
    assert max(length for _, length in manifest.parity.cases) == 2 * CHECKED_STEPS + 3  # not 2 x steps + 3
    assert manifest.inputs.max_length == 4 * steps


def test_a_recording_of_one_label_is_refused(tmp_path: Path) -> None:
    frame = pd.read_csv(_recording(tmp_path / "rec.csv", 200)).assign(label="idle")
    frame.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(ValueError, match=r"one\.csv: 'label' holds one label only, \['idle'\]; tagging"):
        load_data(_config(tmp_path / "one.csv"))


def test_a_long_recording_gives_fewer_windows_that_still_read_every_step() -> None:
    from training.data.dataset import Split
    from training.data.recordings import MAX_WINDOWS, STRIDE, _windows

    steps = 40 * MAX_WINDOWS
    X = np.arange(steps, dtype=np.float32).reshape(1, steps, 1)
    long = Split(X, np.zeros((1, steps), np.int64))
    for width in (256, 32):
        windows = _windows(long, np.array([0]), np.array([steps]), width)
        # at most MAX_WINDOWS, unless windows side by side need more (32 steps: 10,240)
        assert len(windows) <= max(MAX_WINDOWS, steps // width) + 1 and windows.lengths.max() == width
        read = np.unique(windows.X[:, :, 0])
        assert read.size == steps  # every step in some window
    short = Split(X[:, :3200], np.zeros((1, 3200), np.int64))
    assert len(_windows(short, np.array([0]), np.array([3200]), 32)) == (3200 - 32) // (32 // STRIDE) + 1


def test_a_candidates_validation_steps_are_read_in_pieces_after_the_steps_before_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A window candidate is scored on each recording's validation steps in pieces, each read after up
    to WARM_UP steps before it (read whole from the start, the 800,000 steps before a 1,000,000-step
    recording's test took ~18 s per candidate): every validation step is scored once, with the steps
    just before it read first; a validation part within WARM_UP steps of the start reads as whole."""
    from training.data import recordings
    from training.data.dataset import Recordings, Split

    steps = 100
    X = np.arange(2 * steps, dtype=np.float32).reshape(2, steps, 1)
    series = Split(X, np.ones((2, steps), np.int64), np.array([steps, 80]))
    cuts, ends = np.array([60, 50]), np.array([90, 70])
    near = recordings.validation_pieces(Recordings(series, cuts, ends))
    assert len(near) == 2 and (near.lengths == ends).all()  # as read whole: from the start to the test
    assert [(near.y[i] != PAD_LABEL).sum() for i in range(2)] == [30, 20]
    monkeypatch.setattr(recordings, "WARM_UP", 8)
    pieces = recordings.validation_pieces(Recordings(series, cuts, ends))
    scored, read_before = [], []
    for row in range(len(pieces)):
        values = pieces.X[row, : pieces.lengths[row], 0]
        labelled = np.flatnonzero(pieces.y[row] != PAD_LABEL)
        assert labelled.size <= 8 and labelled[0] <= 8 and labelled[-1] == pieces.lengths[row] - 1
        assert (np.diff(values) == 1).all()  # consecutive steps of one recording
        scored += values[labelled].tolist()
        read_before.append(labelled[0])
    validation = [i * steps + s for i, (c, e) in enumerate(zip(cuts, ends, strict=True))
                  for s in range(c, e)]
    assert sorted(scored) == validation  # each validation step scored once
    assert min(read_before) == 8  # each piece read after the 8 steps before it


@pytest.mark.parametrize("steps, rows", [(60_000, 1), (32, 3_000)])
def test_the_plan_reserves_what_reading_the_test_takes(tmp_path: Path, steps: int, rows: int) -> None:
    """The time budget keeps room for the end's reads (the test, and the training split for the
    diagnosis), timed on a part of the split: counted in rows, one 1,000,000-step recording was planned
    at under 1 ms and took ~20 s, and the run ended 34 s past its budget."""
    import time

    import torch

    from training import defaults, loop
    from training.data.dataset import Split
    from training.model import GRUModel

    config = load_config(None, ["data.dataset=file", f"data.path={_recording(tmp_path / 'rec.csv', 300)}",
                                "data.task=tagging", "data.window=40", "model.hidden_size=32"])
    data = load_data(config.data)
    torch.manual_seed(0)
    model = GRUModel(defaults.resolve(config, data)[0].model)
    features = data.train.X.shape[2]
    split = Split(np.random.default_rng(0).normal(size=(rows, steps, features)).astype(np.float32),
                  np.zeros((rows, steps), np.int64))
    planned = loop._read_seconds(model, split, torch.device("cpu"))
    begun = time.perf_counter()
    torch.no_grad()(loop._read_split)(model, split, torch.device("cpu"))
    took = time.perf_counter() - begun
    assert took / 4 < planned < 4 * took, (planned, took)
    assert model.training  # left as it was


def test_a_long_recording_is_read_in_parts_as_a_stream_and_scores_as_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recording longer than PART_STEPS is read in parts with the state carried, as a stream is (read
    whole, 1,000,000 steps held ~4 GB of activations): the same answers, accuracy and loss."""
    import torch

    from training import defaults, loop
    from training.model import GRUModel

    config = load_config(None, ["data.dataset=file", f"data.path={_recording(tmp_path / 'rec.csv', 700)}",
                                "data.task=tagging", "data.window=40", "model.hidden_size=8"])
    data = load_data(config.data)
    torch.manual_seed(0)
    model = GRUModel(defaults.resolve(config, data)[0].model)
    model.normaliser.fit(data.train.X, None, lengths=data.train.lengths)
    model.eval()
    read = torch.no_grad()(loop._read_split)
    whole = read(model, data.test, torch.device("cpu"))
    monkeypatch.setattr(loop, "PART_STEPS", 64)
    assert loop._chunk_rows(model, data.test) == (1, True)
    parts = read(model, data.test, torch.device("cpu"))
    assert (parts[1] == whole[1]).all()
    np.testing.assert_allclose(parts[2], whole[2], atol=1e-5)
    assert parts[0]["loss"] == pytest.approx(whole[0]["loss"], rel=1e-5)
