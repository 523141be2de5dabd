"""The user's own files: ragged long-format CSV/Parquet and NPZ read on their true lengths, and every
problem refused with the file, the series (and step) and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import DataConfig
from training.data import load_data
from training.data.files import read_series

LENGTHS = [5, 9, 3, 7, 6, 8, 4, 9, 5, 7, 6, 3]


def _ragged_frame(lengths: list[int] = LENGTHS) -> pd.DataFrame:
    """Series of different lengths, two features; label "up" when the first feature rises."""
    rng = np.random.default_rng(0)
    rows = []
    for s, length in enumerate(lengths):
        label = "up" if s % 2 else "down"
        for t in range(length):
            rows.append({"series_id": f"s{s:02d}", "step": t, "a": (t if s % 2 else -t) + rng.normal(),
                         "b": rng.normal(), "label": label})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # any row order


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)
    return path


def _config(path: Path, **kwargs) -> DataConfig:
    return DataConfig(dataset="file", path=str(path), task=kwargs.pop("task", "classification"), **kwargs)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ragged_long_format_keeps_true_lengths(tmp_path: Path, suffix: str) -> None:
    frame = _ragged_frame()
    split, features = read_series(_write(frame, tmp_path / f"d{suffix}"), _config(tmp_path))
    assert features == ["a", "b"] and split.X.shape == (12, 9, 2)
    np.testing.assert_array_equal(split.lengths, LENGTHS)
    first = frame[frame.series_id == "s02"].sort_values("step")  # 3 steps, in step order, then zeros
    np.testing.assert_allclose(split.X[2, :3], first[["a", "b"]].to_numpy(np.float32))
    assert (split.X[2, 3:] == 0).all() and list(split.y[:2]) == ["down", "up"]


def test_ragged_file_with_separate_test_file_trains_on_true_lengths(tmp_path: Path) -> None:
    train = _write(_ragged_frame(), tmp_path / "train.csv")
    test = _write(_ragged_frame([4, 10, 2]), tmp_path / "test.csv")
    data = load_data(_config(train, test_path=str(test), val_fraction=0.25))
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 3
    np.testing.assert_array_equal(data.test.lengths, [4, 10, 2])
    assert data.train.ragged and data.test.X.shape[1] == 10
    assert set(data.val.y) == {0, 1}  # every class in validation


def test_npz_padded_with_lengths_and_concatenated_forms_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    series = [rng.normal(size=(n, 2)).astype(np.float32) for n in LENGTHS]
    y = np.array(["down", "up"] * 6)
    np.savez(tmp_path / "cat.npz", X=np.concatenate(series), lengths=LENGTHS, y=y)
    padded = np.zeros((12, 9, 2), np.float32)
    for i, s in enumerate(series):
        padded[i, : len(s)] = s
    padded[0, 7] = 99.0  # past lengths[0] = 5: ignored
    np.savez(tmp_path / "pad.npz", X=padded, lengths=np.array(LENGTHS), y=y)
    a, b = (read_series(tmp_path / name, _config(tmp_path))[0] for name in ("cat.npz", "pad.npz"))
    np.testing.assert_array_equal(a.lengths, LENGTHS)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.lengths, b.lengths)


def test_missing_values_filled_as_data_missing_says(tmp_path: Path) -> None:
    frame = _ragged_frame().sort_values(["series_id", "step"]).reset_index(drop=True)
    rows = frame.index[frame.series_id == "s01"]  # 9 steps
    frame.loc[rows[[0, 1, 4]], "a"] = np.nan  # two before the first value, one after step 3
    path = _write(frame, tmp_path / "d.csv")
    a = frame.loc[rows, "a"].to_numpy(np.float32)
    ffill = read_series(path, _config(path, missing="ffill"))[0].X[1, :9, 0]
    np.testing.assert_array_equal(ffill[[0, 1, 2, 3, 4, 5]], [a[2], a[2], a[2], a[3], a[3], a[5]])
    zero = read_series(path, _config(path, missing="zero"))[0].X[1, :9, 0]
    assert zero[0] == zero[1] == zero[4] == 0.0 and zero[3] == a[3]


def _frame_with(change) -> pd.DataFrame:
    frame = _ragged_frame().sort_values(["series_id", "step"]).reset_index(drop=True)
    change(frame)
    return frame


def _drop_step(frame: pd.DataFrame) -> None:
    frame.drop(index=frame.index[(frame.series_id == "s03") & (frame.step == 2)], inplace=True)


def _duplicate_step(frame: pd.DataFrame) -> None:
    frame.loc[(frame.series_id == "s04") & (frame.step == 3), "step"] = 2


def _text_value(frame: pd.DataFrame) -> None:
    frame["b"] = frame["b"].astype(object)
    frame.loc[(frame.series_id == "s05") & (frame.step == 1), "b"] = "n/a?"


def _label_change(frame: pd.DataFrame) -> None:
    frame.loc[(frame.series_id == "s06") & (frame.step == 2), "label"] = "up"


def _nan_value(frame: pd.DataFrame) -> None:
    frame.loc[(frame.series_id == "s07") & (frame.step == 4), "a"] = np.nan


def _inf_value(frame: pd.DataFrame) -> None:
    frame.loc[(frame.series_id == "s08") & (frame.step == 0), "b"] = np.inf


def _no_label(frame: pd.DataFrame) -> None:
    frame.loc[(frame.series_id == "s09") & (frame.step == 0), "label"] = np.nan


def _no_id(frame: pd.DataFrame) -> None:
    frame.loc[3, "series_id"] = np.nan


@pytest.mark.parametrize("change, message", [
    (_drop_step, r"d\.csv: series 's03' has no row for step 2 \(it goes 1, 3\): add the missing row"),
    (_duplicate_step, r"d\.csv: series 's04', step 2 appears in more than one row; keep one row"),
    (_text_value, r"d\.csv: series 's05', step 1: 'b' is 'n/a\?', not a number; feature columns hold"),
    (_label_change, r"d\.csv: series 's06' has 2 different values in 'label' .*same on every row"),
    (_nan_value, r"d\.csv: series 's07', step 4: 'a' is missing \(NaN\); 1 missing .*data\.missing"),
    (_inf_value, r"d\.csv: series 's08', step 0: 'b' is inf \(infinite\); inputs must be finite"),
    (_no_label, r"d\.csv: series 's09', step 0 has an empty 'label' cell; every row needs its label"),
    (_no_id, r"d\.csv: row 3 .* has no 'series_id'"),
])
def test_long_format_problems_name_file_series_step_and_fix(tmp_path: Path, change, message: str) -> None:
    path = _write(_frame_with(change), tmp_path / "d.csv")
    with pytest.raises(ValueError, match=message):
        load_data(_config(path))


def test_missing_values_in_the_test_file_are_refused_too(tmp_path: Path) -> None:
    train = _write(_ragged_frame(), tmp_path / "train.csv")
    test = _write(_frame_with(_nan_value), tmp_path / "test.csv")
    with pytest.raises(ValueError, match=r"test\.csv: series 's07', step 4: 'a' is missing"):
        load_data(_config(train, test_path=str(test)))


def test_a_series_with_no_value_at_all_cannot_be_carried_forward(tmp_path: Path) -> None:
    frame = _frame_with(lambda f: f.loc.__setitem__((f.series_id == "s02", "a"), np.nan))
    path = _write(frame, tmp_path / "d.csv")
    with pytest.raises(ValueError, match=r"series 's02', step 0: 'a' has no value in the whole series"):
        load_data(_config(path, missing="ffill"))
    assert load_data(_config(path, missing="zero")).task == "classification"


def test_test_file_with_other_features_is_refused(tmp_path: Path) -> None:
    train = _write(_ragged_frame(), tmp_path / "train.csv")
    test = _write(_ragged_frame().rename(columns={"b": "c"}), tmp_path / "test.csv")
    with pytest.raises(ValueError, match=r"has features \['a', 'c'\] but .* has \['a', 'b'\]"):
        load_data(_config(train, test_path=str(test)))


def test_non_numeric_regression_target_is_named(tmp_path: Path) -> None:
    path = _write(_ragged_frame(), tmp_path / "d.csv")
    with pytest.raises(ValueError, match=r"series 's00' has the regression target 'down', not a finite"):
        load_data(_config(path, task="regression"))


def _npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


X3 = np.ones((4, 5, 2), np.float32)
Y4 = np.array(["a", "b", "a", "b"])


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.array([np.ones((3, 2)), np.ones((5, 2))], dtype=object), "y": Y4[:2]},
     r"array 'X' is an object array .* read without pickle: save numeric arrays instead: X zero-padded"),
    ({"X": X3, "y": np.array(["a", 1, "b", 2], dtype=object)}, r"array 'y' is an object array"),
    ({"X": X3, "y": Y4, "lengths": np.array([5, 0, 3, 4])},
     r"series 1 has length 0 \(lengths\[1\]\); every series needs at least one step: drop it"),
    ({"X": X3, "y": Y4, "lengths": np.array([5, 6, 3, 4])}, r"lengths\[1\] = 6 is more than the 5 steps"),
    ({"X": X3, "y": Y4, "lengths": np.array([5, 4, 3])}, r"'lengths' has 3 entries for 4 series"),
    ({"X": np.ones((10, 2)), "y": Y4[:3], "lengths": np.array([3, 3, 3])},
     r"'lengths' sum to 9 but the concatenated 'X' has 10 rows"),
    ({"X": np.ones((10, 2)), "y": Y4[:3]}, r"a 2-D 'X' \[L, F\] holds concatenated series and needs"),
    ({"X": X3, "y": Y4[:3]}, r"'y' has 3 entries for 4 series"),
    ({"X": np.where(np.arange(5)[None, :, None] == 2, np.nan, X3), "y": Y4},
     r"series 0 \(X\[0\]\), step 2: 'feature_0' is missing \(NaN\)"),
    ({"Z": X3}, r"needs arrays 'X' and 'y' \(found \['Z'\]\)"),
])
def test_npz_problems_say_what_to_do(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_data(_config(_npz(tmp_path, **arrays)))


def test_nan_in_padding_is_not_missing(tmp_path: Path) -> None:
    X = X3.copy()
    X[0, 4] = np.nan  # past lengths[0]
    data = read_series(_npz(tmp_path, X=X, y=Y4, lengths=np.array([4, 5, 5, 5])), _config(tmp_path))[0]
    assert np.isfinite(data.X).all() and data.X[0, 4, 0] == 0.0


def test_tagging_file_has_a_label_on_every_step(tmp_path: Path) -> None:
    from training.data.dataset import PAD_LABEL
    from training.data.synthetic import REGIMES, regime_split

    regimes = regime_split(12, seed=3)  # ragged 30-90 steps, a regime label on every step
    rows = [{"series_id": i, "step": t, "value": float(regimes.X[i, t, 0]), "label": REGIMES[regimes.y[i, t]]}
            for i in range(12) for t in range(regimes.lengths[i])]
    path = _write(pd.DataFrame(rows), tmp_path / "tags.csv")
    data = load_data(_config(path, task="tagging", test_fraction=0.25))
    assert data.task == "tagging" and data.label_names == sorted(REGIMES)
    assert len(data.train) + len(data.val) + len(data.test) == 12
    split = data.test
    for i in range(len(split)):
        n = split.lengths[i]
        assert (split.y[i, :n] != PAD_LABEL).all() and (split.y[i, n:] == PAD_LABEL).all()
    with pytest.raises(ValueError, match="for data.task tagging write a long-format CSV or Parquet"):
        load_data(_config(_npz(tmp_path, X=X3, y=Y4), task="tagging"))


def test_user_tagging_file_trains(tmp_path: Path) -> None:
    from training.config import load_config
    from training.loop import fit

    frame = _ragged_frame().assign(label=lambda f: np.where(f["a"] > 0, "high", "low"))
    path = _write(frame, tmp_path / "tags.csv")
    result = fit(load_config(None, ["data.dataset=file", f"data.path={path}", "data.task=tagging",
                                    f"run_dir={tmp_path}", "progress=false", "optim.max_epochs=1",
                                    "model.hidden_size=8", "optim.plots=false", "optim.tensorboard=false"]))
    assert 0.0 <= result.test_metrics["accuracy"] <= 1.0
