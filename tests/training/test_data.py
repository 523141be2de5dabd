"""Built-in datasets with their official splits, the user's own files, and the forecasting windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import DataConfig
from training.data import load_data
from training.data.splits import holdout_indices, stratified_folds
from training.data.windows import seasonal_naive


def test_italy_power_demand_uses_the_official_split() -> None:
    data = load_data(DataConfig(dataset="ItalyPowerDemand"))
    assert len(data.train) + len(data.val) == 67 and len(data.test) == 1029
    assert data.train.X.shape[1:] == (24, 1) and data.label_names == ["1", "2"]
    assert set(np.unique(data.val.y)) == {0, 1}  # stratified holdout keeps both classes


def test_airline_windows_hold_out_the_last_horizon() -> None:
    data = load_data(DataConfig(dataset="Airline", window=24, horizon=12))
    assert data.test.X.shape == (1, 24, 1) and data.test.y.shape == (1, 12)
    assert data.test.y[0, 0] == 417.0 and data.test.y[0, -1] == 432.0  # Jan and Dec 1960
    np.testing.assert_array_equal(data.test_naive[0], data.test.X[0, -12:, 0])  # 1959 repeated
    # no training or validation target reaches into the test year
    assert max(data.train.y.max(), data.val.y.max()) <= 559.0
    assert data.window_scaling


def test_seasonal_naive_repeats_last_season() -> None:
    np.testing.assert_array_equal(seasonal_naive(np.arange(8.0), 4, 6), [4, 5, 6, 7, 4, 5])


def _long_frame(n_series: int = 20, steps: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n_series):
        label = "up" if s % 2 else "down"
        for t in range(steps):
            rows.append({"series_id": f"s{s}", "step": t, "a": rng.normal() + (t if s % 2 else -t),
                         "b": rng.normal(), "label": label})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_long_format_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    frame = _long_frame()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    data = load_data(DataConfig(dataset="file", path=str(path), task="classification"))
    assert data.feature_names == ["a", "b"] and data.label_names == ["down", "up"]
    assert len(data.train) + len(data.val) + len(data.test) == 20
    assert data.train.X.shape[1:] == (6, 2)
    x0 = data.train.X[0]
    assert np.all(np.diff(x0[:, 0]) > -3) or np.all(np.diff(x0[:, 0]) < 3)  # steps sorted by time


def test_npz_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=X.sum(axis=(1, 2)))
    data = load_data(DataConfig(dataset="file", path=str(tmp_path / "d.npz"), task="regression"))
    assert data.task == "regression" and data.train.y.shape[1] == 1 and data.feature_names[0] == "feature_0"


def test_shipped_example_loads_and_matches_its_npz_form(tmp_path: Path) -> None:
    path = Path(__file__).parents[2] / "examples" / "data" / "sensors.csv"
    csv = load_data(DataConfig(dataset="file", path=str(path), task="classification"))
    assert csv.feature_names == ["temperature", "vibration"] and csv.label_names == ["fault", "normal"]
    assert csv.train.ragged and 8 <= csv.train.lengths.min() < csv.train.lengths.max() <= 16
    frame = pd.read_csv(path).sort_values(["series_id", "step"])
    lengths = frame.groupby("series_id").size().to_numpy()
    y = frame.groupby("series_id")["label"].first().to_numpy(str)
    np.savez(tmp_path / "sensors.npz", X=frame[["temperature", "vibration"]].to_numpy(np.float32),
             lengths=lengths, y=y, feature_names=np.array(["temperature", "vibration"]))  # concatenated
    npz = load_data(DataConfig(dataset="file", path=str(tmp_path / "sensors.npz"), task="classification"))
    assert npz.feature_names == csv.feature_names and npz.label_names == csv.label_names
    np.testing.assert_array_equal(npz.test.X, csv.test.X)  # same seeded split either way
    np.testing.assert_array_equal(npz.test.lengths, csv.test.lengths)


@pytest.mark.parametrize("config, message", [
    (DataConfig(dataset="nope"), "unknown data.dataset"),
    (DataConfig(dataset="file"), "data.path is required"),
    (DataConfig(dataset="file", path="x.csv"), "data.task is required"),
    (DataConfig(dataset="file", path="/nonexistent.csv", task="classification"), "does not exist"),
])
def test_bad_data_config_says_what_to_fix(config: DataConfig, message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_data(config)


def test_missing_column_is_named(tmp_path: Path) -> None:
    _long_frame().drop(columns="label").to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['label'\]"):
        load_data(DataConfig(dataset="file", path=str(tmp_path / "d.csv"), task="classification"))


def test_acsf1_is_built_in_with_its_official_split() -> None:
    data = load_data(DataConfig(dataset="ACSF1"))
    assert len(data.train) + len(data.val) == 100 and len(data.test) == 100
    assert data.train.X.shape[1:] == (1460, 1) and len(data.label_names) == 10
    assert set(np.unique(data.val.y)) == set(range(10))  # 20 held out: two of each class


@pytest.mark.parametrize("name", ["ItalyPowerDemand", "GunPoint", "ACSF1", "JapaneseVowels", "M1Yearly"])
def test_built_in_inputs_are_finite(name: str) -> None:
    data = load_data(DataConfig(dataset=name))
    assert all(np.isfinite(split.X).all() for split in (data.train, data.val, data.test))


def test_m1_yearly_uses_the_monash_horizon_by_default() -> None:
    data = load_data(DataConfig(dataset="M1Yearly"))
    assert data.test.y.shape == (181, 6) and data.test.X.shape[1] == 8 and data.seasonal_period == 1
    with pytest.raises(ValueError, match="data.seasonal_period must be 1"):
        load_data(DataConfig(dataset="M1Yearly", seasonal_period=12))


def test_small_set_validation_holds_every_class() -> None:
    labels = np.repeat(np.arange(10), [5, 5, 4, 4, 3, 3, 3, 3, 3, 3])  # 36 series, 10 classes
    keep, held = holdout_indices(36, 0.2, seed=0, labels=labels)
    assert len(held) == 10 and set(labels[held]) == set(range(10)) == set(labels[keep])
    keep, held = holdout_indices(36, 0.2, seed=0, labels=np.repeat([0, 1, 2], 12))
    assert len(held) == 8 and np.bincount(np.repeat([0, 1, 2], 12)[held]).min() >= 2


def test_stratified_folds_cover_every_series_once() -> None:
    labels = np.repeat([0, 1, 2], 12)
    folds = stratified_folds(36, 4, seed=0, labels=labels)
    held = np.concatenate([val for _, val in folds])
    assert sorted(held.tolist()) == list(range(36))
    assert all(np.bincount(labels[val]).tolist() == [3, 3, 3] for _, val in folds)
    assert all(not set(train) & set(val) for train, val in folds)
    assert len(stratified_folds(10, 3, seed=0, labels=np.array([0] * 9 + [1]))) == 3  # falls back to KFold
