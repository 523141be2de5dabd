"""Odd but valid user files (labels of any type, rare classes, tiny scales) that must train and serve the
labels as written, and the files that cannot make a model, refused with the file, the field and the fix."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.checkpoint import load_payload
from training.config import DataConfig
from training.data import load_data


def _frame(labels: Sequence[object], length: int = 6, scale: float = 1.0) -> pd.DataFrame:
    """One series per label; the first feature rises for the series at odd positions."""
    rng = np.random.default_rng(0)
    return pd.DataFrame([
        {"series_id": f"s{s:02d}", "step": t, "a": scale * ((t if s % 2 else -t) + rng.normal()),
         "label": label}
        for s, label in enumerate(labels) for t in range(length)
    ])


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def _config(path: Path, test: Path | None = None, task: str = "classification") -> DataConfig:
    return DataConfig(dataset="file", path=str(path), test_path=str(test) if test else None, task=task)


def test_labels_are_read_as_written_and_the_same_number_is_one_class(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text(_frame(["x", "y"] * 6).assign(label=lambda f: f.series_id.map(
        lambda s: "007" if int(s[1:]) % 2 else "None")).to_csv(index=False))
    test = _csv(_frame([7.0, "None"] * 3), tmp_path / "test.csv")  # a float column from another tool
    data = load_data(_config(train, test))
    assert data.label_names == ["007", "None"]  # not 7 (pandas' int), not an empty "None" cell
    np.testing.assert_array_equal(data.test.y, [0, 1] * 3)


def test_int_labels_in_training_and_float_labels_in_the_test_file_are_one_class(tmp_path: Path) -> None:
    train = _csv(_frame([0, 1] * 6), tmp_path / "train.csv")
    test = _csv(_frame([0.0, 1.0, 1.0] * 2), tmp_path / "t.csv")
    data = load_data(_config(train, test))
    assert data.label_names == ["0", "1"] and len(data.test) == 6
    np.testing.assert_array_equal(data.test.y, [0, 1, 1] * 2)


def test_a_class_of_one_series_is_trained_on_never_held_out(tmp_path: Path) -> None:
    path = _csv(_frame(["common"] * 11 + ["rare"]), tmp_path / "d.csv")
    data = load_data(_config(path))
    rare = data.label_names.index("rare")
    assert rare in np.r_[data.train.y, data.val.y] and rare not in data.test.y


@pytest.mark.parametrize("train_labels, test_labels, message", [
    (["up", "down"] * 6, ["up", "down", "new"] * 2,
     r"test\.csv: label\(s\) \['new'\] in 'label' appear in no training series of .*train\.csv; "
     r".*add training series of those labels, or drop them from the test file"),
    (["1", "01"] * 6, None,
     r"train\.csv: 'label' holds one label only, \['0?1'\]; classification needs at least two \(labels that "
     r"are the same number, 1 and 01, are one\)"),
    (["up", "down"], None,
     r"label\(s\) \['\w+'\] have too few series to train on some and test on others: give more series of "
     r"those labels, or a test file \(data\.test_path\)"),
])
def test_labels_a_model_cannot_learn_are_refused(tmp_path: Path, train_labels: list[str],
                                                 test_labels: list[str] | None, message: str) -> None:
    train = _csv(_frame(train_labels), tmp_path / "train.csv")
    test = _csv(_frame(test_labels), tmp_path / "test.csv") if test_labels else None
    with pytest.raises(ValueError, match=message):
        load_data(_config(train, test))


def test_too_few_series_to_split_name_the_fractions(tmp_path: Path) -> None:
    path = _csv(_frame([1.5]), tmp_path / "one.csv")
    with pytest.raises(ValueError, match=r"cannot hold out 0\.2 of 1 series and train on the rest "
                                         r"\(data\.test_fraction, then data\.val_fraction .*give at least 3"):
        load_data(_config(path, task="regression"))


def test_an_empty_file_is_named(tmp_path: Path) -> None:
    train = _csv(_frame(["up", "down"] * 6), tmp_path / "train.csv")
    (tmp_path / "test.csv").write_text("")
    with pytest.raises(ValueError, match=r"test\.csv: the file is empty; write a header row"):
        load_data(_config(train, tmp_path / "test.csv"))


def test_features_at_any_scale_are_normalised_by_their_own_deviation() -> None:
    import torch

    from training.normalise import Normaliser

    rng = np.random.default_rng(0)
    X = np.stack([rng.normal(size=(20, 8)) * 1e-9, rng.normal(size=(20, 8)) * 1e-30 + 1e-29,
                  np.full((20, 8), 5.0), np.zeros((20, 8))], axis=2).astype(np.float32)
    y = np.full((20, 1), 1e-9, np.float32)  # a constant target
    normaliser = Normaliser(4, 1)
    normaliser.fit(X, y)
    inputs = normaliser.inputs(torch.as_tensor(X), torch.ones(1))
    np.testing.assert_allclose(inputs[..., :2].reshape(-1, 2).std(0), [1.0, 1.0], rtol=0.01)
    np.testing.assert_array_equal(normaliser.feature_std[2:], [1.0, 1.0])  # constant: not x 1e6 at serve time
    assert normaliser.outputs(torch.tensor([[0.3]]), torch.ones(1)).item() == pytest.approx(1e-9, rel=1e-5)


def test_a_constant_forecast_series_trains_and_exports(tmp_path: Path) -> None:
    from export.bundle import export_checkpoint
    from tests.helpers import train_tiny

    rows = [{"series_id": "a", "step": t, "label": 5.0} for t in range(60)]
    path = _csv(pd.DataFrame(rows), tmp_path / "flat.csv")
    run = train_tiny(tmp_path / "runs", "flat", "data.dataset=file", f"data.path={path}",
                     "data.task=forecast", "optim.max_epochs=2", "model.hidden_size=8",
                     "optim.time_budget=null",
                     "optim.plots=false", "optim.tensorboard=false")
    assert run.test_metrics["mae"] < 1e-4 and "mase" not in run.test_metrics  # was NaN: JSON no parser reads
    assert "MASE divides by it" in run.test_metrics["mase_omitted"]
    json.loads((run.run_dir / "test_metrics.json").read_text(), parse_constant=_refuse)
    exported = export_checkpoint(run.checkpoint, tmp_path / "models", "flat")  # parity failed: std 1e-6
    assert exported.manifest.parity.max_abs_diff <= exported.manifest.parity.tolerance


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


@pytest.mark.parametrize("content, reason", [
    (b"", r"\(EOFError\)"),
    (b"PK\x03\x04" + b"\x00" * 200, r"\(.+\)"),  # a zip archive cut short
    (pickle.dumps([1, 2]), r"\(it holds pickled Python objects, which are never loaded\)"),
])
def test_a_checkpoint_cut_short_or_foreign_is_one_line(tmp_path: Path, content: bytes, reason: str) -> None:
    from gru_cli import main

    (tmp_path / "checkpoint.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"checkpoint\.pt: not a checkpoint gru train wrote, whole " \
                       + reason):
        load_payload(tmp_path / "checkpoint.pt")
    with pytest.raises(IsADirectoryError, match=r"is a folder; give the checkpoint\.pt in it"):
        load_payload(tmp_path)
    assert main(["export", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--name", "x",
                 "--repository", str(tmp_path / "models")]) == 2


def test_spaces_after_commas_a_bom_and_crlf_read_as_the_plain_file(tmp_path: Path) -> None:
    text = _frame(["up", "down"] * 6).to_csv(index=False)
    plain = load_data(_config(_csv(_frame(["up", "down"] * 6), tmp_path / "plain.csv")))
    spaced = tmp_path / "spaced.csv"
    spaced.write_bytes(("\ufeff" + text.replace(",", " , ")).replace("\n", "\r\n").encode())
    data = load_data(_config(spaced))
    assert data.label_names == plain.label_names == ["down", "up"] and data.feature_names == ["a"]
    np.testing.assert_array_equal(data.test.X, plain.test.X)


@pytest.mark.parametrize("separator, name", [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_separated_by_something_else_says_so(tmp_path: Path, separator: str, name: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(_frame(["up", "down"] * 6).to_csv(index=False, sep=separator))
    with pytest.raises(ValueError, match=rf"d\.csv: the header is one column, .*: the file separates its "
                                         rf"columns with {name}; write it with commas"):
        load_data(_config(path))


def test_a_value_beyond_float32_is_named_not_called_infinite(tmp_path: Path) -> None:
    frame = _frame(["up", "down"] * 6)
    frame.loc[(frame.series_id == "s03") & (frame.step == 2), "a"] = 5e39
    with pytest.raises(ValueError, match=r"series 's03', step 2: 'a' is 5e\+39, beyond the range of float32 "
                                         r"\(3\.4e38\) that models compute in; rescale the column"):
        load_data(_config(_csv(frame, tmp_path / "d.csv")))


def _month(t: int) -> pd.Timestamp:
    return pd.Timestamp("2023-07-01") + pd.DateOffset(months=t)  # across a new year


@pytest.mark.parametrize("stamp", [lambda t: f"2024-1-{t + 1}",
                                   lambda t: f"{_month(t).month}/1/{_month(t).year}",
                                   lambda t: _month(t).strftime("%b %Y"),
                                   lambda t: f"t{t}"])
def test_text_steps_are_read_in_time_order(tmp_path: Path, stamp) -> None:
    frame = _frame(["up", "down"] * 6, length=12)
    ordered = load_data(_config(_csv(frame, tmp_path / "numbers.csv")))
    frame["step"] = frame["step"].map(stamp)  # as text, 2024-1-10 sorts before 2024-1-2
    data = load_data(_config(_csv(frame.sample(frac=1.0, random_state=0), tmp_path / "text.csv")))
    np.testing.assert_array_equal(data.train.X, ordered.train.X)


def test_sharded_labels_are_matched_as_numbers_and_an_untrained_one_is_refused(tmp_path: Path) -> None:
    from training.data.shards import load_sharded

    _frame([0, 1] * 6).to_parquet(tmp_path / "train.parquet")
    _frame([1.0, 0.0] * 2).to_parquet(tmp_path / "test.parquet")
    _frame([1.0, 2.0]).to_parquet(tmp_path / "other.parquet")
    config = DataConfig(dataset="file", path=str(tmp_path / "train.parquet"), task="classification",
                        test_path=str(tmp_path / "test.parquet"), sharded=True)
    data = load_sharded(config, 0, 1)
    assert data.label_names == ["0", "1"]
    np.testing.assert_array_equal(data.test.y, [1, 0, 1, 0])  # was a KeyError: '1.0'
    with pytest.raises(ValueError, match=r"other\.parquet: label\(s\) \[.2\.0.\] appear in no training"):
        load_sharded(config.model_copy(update={"test_path": str(tmp_path / "other.parquet")}), 0, 1)


@pytest.mark.parametrize("name, content, message", [
    ("d.csv", "series_id,step,a,label\ns1,0,1.0,caf\xe9\n".encode("latin-1"),
     r"d\.csv: not UTF-8 text \(byte 0xe9 at position \d+\); save it as UTF-8"),
    ("d.parquet", b"not parquet", r"d\.parquet: not a Parquet file that can be read \(.*magic bytes"),
    ("d.npz", b"not npz", r"d\.npz: not an NPZ file \(a zip archive of arrays that np\.savez writes\)"),
])
def test_a_file_that_is_not_what_its_name_says_is_named(tmp_path: Path, name: str, content: bytes,
                                                        message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_data(_config(tmp_path / name))


def test_npz_labels_as_bytes_or_a_column_are_the_labels(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(12, 5, 2)).astype(np.float32)
    np.savez(tmp_path / "b.npz", X=X, y=np.array([b"up", b"down"] * 6), feature_names=np.array([b"a", b"b"]))
    np.savez(tmp_path / "c.npz", X=X, y=(np.arange(12) % 2).reshape(12, 1))
    data = load_data(_config(tmp_path / "b.npz"))
    assert data.label_names == ["down", "up"] and data.feature_names == ["a", "b"]  # not "b'up'"
    assert load_data(_config(tmp_path / "c.npz")).label_names == ["0", "1"]  # not "[0]", "[1]"


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.ones((12, 2))}, r"'y' has shape \(12, 2\); data\.task classification needs one label per"),
    ({"feature_names": np.array(["a", "a"])}, r"'feature_names' names \['a'\] more than once"),
    ({"X": np.full((12, 5, 2), 1e39)}, r"X\[0, 0, 0\] is 1e\+39, beyond the range of float32"),
])
def test_npz_arrays_a_model_cannot_take_are_named(tmp_path: Path, arrays: dict, message: str) -> None:
    arrays = {"X": np.ones((12, 5, 2), np.float32), "y": np.arange(12) % 2} | arrays
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_data(_config(tmp_path / "d.npz"))


def test_labels_as_written_train_export_and_serve_what_the_run_reported(tmp_path: Path) -> None:
    """Labels 007 and None in training, 7.0 and None in the test file: one model whose served answers, over
    REST from a real server, are the reported test accuracy, with the labels as the training file wrote."""
    from export.bundle import export_checkpoint
    from service.client import predict
    from tests.helpers import Server, train_tiny

    frame = _frame(["None", "007"] * 10, length=8)
    train = _csv(frame, tmp_path / "train.csv")
    test = _csv(_frame(["None", 7.0] * 4, length=8), tmp_path / "test.csv")
    run = train_tiny(tmp_path / "runs", "labels", "data.dataset=file", f"data.path={train}",
                     f"data.test_path={test}", "data.task=classification", "optim.max_epochs=20",
                     "optim.time_budget=null", "optim.members=1", "optim.plots=false",
                     "optim.tensorboard=false")
    export_checkpoint(run.checkpoint, tmp_path / "models", "labels")
    data = load_data(_config(train, test))
    sequences = [data.test.X[i, : data.test.lengths[i]].tolist() for i in range(len(data.test))]
    server = Server(tmp_path / "models").start()
    try:
        answers = predict(server.url, "labels", sequences)["predictions"]
    finally:
        server.stop()
    served = [answer["label"] for answer in answers]
    assert set(served) <= {"007", "None"}
    truth = [data.label_names[i] for i in data.test.y]
    accuracy = np.mean([s == t for s, t in zip(served, truth, strict=True)])
    assert accuracy == pytest.approx(run.test_metrics["accuracy"])


@pytest.mark.parametrize("test_steps, message", [
    (range(90, 110), r"test\.csv: series 'a' starts at step 90, but .*train\.csv ends it at 99; the test "
                     r"file holds the steps after the training file's, from 100, with no step in both"),
    (range(110, 130), r"starts at step 110, but .* ends it at 99; .* from 100, .*none missing between them"),
    (pd.date_range("1999-01-01", periods=20, freq="MS").strftime("%Y-%m-%d"),
     r"starts at step '1999-01-01', but .* ends it at '2008-04-01'; the test file holds the steps after"),
])
def test_a_forecast_test_file_continues_each_series_or_is_refused(tmp_path: Path, test_steps, message: str
                                                                   ) -> None:
    """Steps in both files were read twice, and steps missing between them were joined, without a word."""
    steps = range(100) if isinstance(test_steps, range) else \
        pd.date_range("2000-01-01", periods=100, freq="MS").strftime("%Y-%m-%d")
    train = _csv(pd.DataFrame({"series_id": "a", "step": steps, "label": np.sin(np.arange(100))}),
                 tmp_path / "train.csv")
    test = _csv(pd.DataFrame({"series_id": "a", "step": test_steps, "label": 0.5}), tmp_path / "test.csv")
    with pytest.raises(ValueError, match=message):
        load_data(_config(train, test, task="forecast"))
    ok = _csv(pd.DataFrame({"series_id": "a", "step": range(100, 120), "label": 0.5}), tmp_path / "ok.csv")
    if isinstance(test_steps, range):
        assert len(load_data(_config(train, ok, task="forecast")).test) > 0


@pytest.mark.parametrize("columns, task, message", [
    (["a", "a"], "classification", r"data\.feature_columns names \['a'\] more than once; list each input"),
    (["a", "label"], "regression",
     r"data\.feature_columns lists 'label', the label/target to learn \(data\.target_column\): as an input "
     r"it would give the model the answer"),
])
def test_feature_columns_that_cannot_be_inputs_are_refused(tmp_path: Path, columns: list[str], task: str,
                                                           message: str) -> None:
    path = _csv(_frame([1.0, 2.0] * 6), tmp_path / "d.csv")
    config = DataConfig(dataset="file", path=str(path), task=task, feature_columns=columns)
    with pytest.raises(ValueError, match=message):
        load_data(config)
