"""The user's own data: CSV/Parquet in long format (training/data/long.py) or NPZ arrays
(training/data/npz.py), series of equal or different lengths. Formats: docs/guides/data.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.config import DataConfig
from training.data.dataset import PAD_LABEL, SequenceData, Split
from training.data.forecast import forecast_from_files
from training.data.long import by_name, feature_columns, long_to_series, one_series, read_table, show
from training.data.npz import read_npz
from training.data.recordings import SPLIT_SERIES, WIDTHS, cut, split_in_time
from training.data.splits import encode_labels, holdout, holdout_indices, validation_split


def load_user_data(config: DataConfig) -> SequenceData:
    if config.task is None:
        raise ValueError("data.task is required for user files: classification, regression, forecast "
                         "or tagging")
    if config.task == "forecast":
        return forecast_from_files(config)
    notes: list[str] = []
    train, features = read_series(Path(config.path or ""), config, notes)
    given = None
    if config.test_path:
        given = in_training_order(*read_series(Path(config.test_path), config), features, config)
    if config.task == "tagging":
        return _tagging(train, given, features, notes, config)
    train, test = (train, given) if given is not None else _holdout(train, config)
    classify = config.task == "classification"
    labels: list[str] = []
    y, y_test = train.y, test.y
    if classify:
        labels, (y, y_test) = encode_labels(y, y_test)
    if labels:
        _refuse_untrained_labels(labels, y, y_test, config)
    train, val = validation_split(Split(train.X, y, train.lengths), config.val_fraction, classify)
    return SequenceData(
        task=config.task,
        train=train, val=val, test=Split(test.X, y_test, test.lengths),
        feature_names=features, label_names=labels, source=f"user file {config.path}",
    )


def in_training_order(test: Split, test_features: list[str], features: list[str], config: DataConfig
                      ) -> Split:
    """The test file's inputs in the training file's order, matched by name (before, the same columns in
    another order were refused, and a sharded run read them in the test file's order, unchecked);
    other columns are refused."""
    order = by_name(test_features, features)
    if order is None:
        raise ValueError(f"{config.test_path} has features {test_features} but {config.path} has "
                         f"{features}; the test file needs the same input columns")
    return Split(test.X[:, :, order], test.y, test.lengths)


def _tagging(series: Split, given: Split | None, features: list[str], notes: list[str],
             config: DataConfig) -> SequenceData:
    """Recordings labelled at every step: whole ones held out, or, with fewer than SPLIT_SERIES of
    them, each split in time (training/data/recordings.py)."""
    test = given if given is not None else Split(series.X[:0], series.y[:0], series.lengths[:0])
    labels, (y, y_test) = _encode_steps(series.y, test.y)
    series, test = Split(series.X, y, series.lengths), Split(test.X, y_test, test.lengths)
    recordings = None
    if len(series) < SPLIT_SERIES:
        recordings, test, how = split_in_time(series, test if given is not None else None, config)
        train, val = cut(recordings, config.window or WIDTHS[0])  # data.window unset: the loop compares
        notes.append(how)
    else:
        if given is None:
            series, test = holdout(series, config.test_fraction, seed=0, stratify=False)
        train, val = validation_split(series, config.val_fraction, stratify=False)
    notes += _unseen([train, val], test, labels)
    if len(labels) < 2:
        raise ValueError(f"{config.path}: {config.target_column!r} holds one label only, {labels}; tagging "
                         "needs at least two")
    return SequenceData(task="tagging", train=train, val=val, test=test, feature_names=features,
                        label_names=labels, source=f"user file {config.path}", notes=notes,
                        recordings=recordings)


def _unseen(fitted: list[Split], test: Split, labels: list[str]) -> list[str]:
    """The line that names the labels of test steps that no training or validation step has (a final fit
    trains on both): they cannot come out right."""
    seen = {label for split in fitted for label in split.y[split.y != PAD_LABEL].tolist()}
    unseen = set(test.y[test.y != PAD_LABEL].tolist()) - seen
    if not unseen:
        return []
    named = ", ".join(repr(labels[i]) for i in sorted(unseen))
    return [f"data: label(s) {named} occur in the test steps but in no training or validation step: the "
            "model cannot learn them and their test steps count as wrong; give training data that holds them"]


def read_series(path: Path, config: DataConfig, notes: list[str] | None = None) -> tuple[Split, list[str]]:
    """One file's series: X zero-padded with true lengths, y the raw label/target per series (tagging:
    per step). `notes` gets what was assumed of a tagging file without an id or step column."""
    if path.suffix.lower() == ".npz":
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist (data.path / data.test_path)")
        if config.task == "tagging":
            raise ValueError(f"{path}: for data.task tagging write a long-format CSV or Parquet file, with "
                             "the label of every step on its row")
        split, features = read_npz(path, config.missing)
        if config.task == "regression":
            split.y = _targets(split.y, path, [f"series {i} (y[{i}])" for i in range(len(split))])
            return split, features
        _refuse_empty_labels(split.y, path)
        if split.y.ndim > 1 and split.y[0].size == 1:  # [N, 1] labels: one per series
            split.y = split.y.reshape(len(split.y))
        elif split.y.ndim > 1:
            raise ValueError(f"{path}: 'y' has shape {split.y.shape}; data.task {config.task} needs one "
                             "label per series, y [N] (several numbers per series: data.task regression)")
        return split, features
    labels = config.target_column if config.task in ("classification", "tagging") else None
    frame = read_table(path, labels, config.id_column)
    if config.task == "tagging":  # a recording is often one file in time order
        assumed = one_series(frame, config, path)
        if notes is not None:
            notes += assumed
    return series_from_frame(frame, config, path)


def _refuse_empty_labels(y: np.ndarray, path: Path) -> None:
    """NaN in a float 'y', or empty text: before, 'nan' and '' were classes (a CSV's empty label cell is
    refused)."""
    rows = y.reshape(len(y), -1)
    if y.dtype.kind not in "fU":
        return
    empty = np.isnan(rows) if y.dtype.kind == "f" else np.char.strip(rows) == ""
    if empty.any():
        i = int(np.argmax(empty.any(axis=1)))
        raise ValueError(f"{path}: y[{i}] is {show(rows[i][0])}, no label; every series needs one: give it "
                         "its label, or drop the series from X, y (and lengths)")


def series_from_frame(frame: pd.DataFrame, config: DataConfig, path: Path) -> tuple[Split, list[str]]:
    """A long-format table's series (also a shard's rows: training/data/shards.py)."""
    features = feature_columns(frame, config, path)
    series = long_to_series(frame, config, path, features, target=config.target_column,
                            per_step=config.task == "tagging")
    split = Split(series.X, series.targets, series.lengths)
    if config.task == "regression":
        split.y = _targets(split.y, path, [f"series {show(i)}" for i in series.ids])
    return split, features


def _holdout(series: Split, config: DataConfig) -> tuple[Split, Split]:
    codes = encode_labels(series.y)[1][0] if config.task == "classification" else None
    keep, held = holdout_indices(len(series), config.test_fraction, seed=0, labels=codes)
    return series.subset(keep), series.subset(held)


def _refuse_untrained_labels(labels: list[str], y: np.ndarray, y_test: np.ndarray,
                             config: DataConfig) -> None:
    """One label only, or a test label that no training series has (the model would have an output it
    never learnt)."""
    trained = set(np.unique(y)) - {PAD_LABEL}
    names = [labels[i] for i in sorted(set(np.unique(y_test)) - trained - {PAD_LABEL})]
    if names and config.test_path:
        raise ValueError(f"{config.test_path}: label(s) {names} in {config.target_column!r} appear in no "
                         f"training series of {config.path}; a model answers only the labels it trained on: "
                         "add training series of those labels, or drop them from the test file")
    if names:
        raise ValueError(f"{config.path}: label(s) {names} have too few series to train on some and test on "
                         "others: give more series of those labels, or a test file (data.test_path)")
    if len(trained) < 2:
        raise ValueError(f"{config.path}: {config.target_column!r} holds one label only, "
                         f"{[labels[i] for i in trained]}; {config.task} needs at least two (labels that "
                         "are the same number, 1 and 01, are one)")


def _encode_steps(*step_labels: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Per-step labels (N, T), None after each length -> indices, PAD_LABEL after each length."""
    valid = [labels != None for labels in step_labels]  # noqa: E711 - elementwise on an object array
    names, codes = encode_labels(*(labels[mask] for labels, mask in zip(step_labels, valid, strict=True)))
    encoded = []
    for labels, mask, code in zip(step_labels, valid, codes, strict=True):
        y = np.full(labels.shape, PAD_LABEL, dtype=np.int64)
        y[mask] = code
        encoded.append(y)
    return names, encoded


def _targets(y: np.ndarray, path: Path, names: list[str]) -> np.ndarray:
    """Regression targets as (N, O) float32, refused where one is not a finite number."""
    numbers = np.array([_number(v) for v in y.reshape(len(y), -1).ravel()], dtype=np.float32)
    bad = ~np.isfinite(numbers)
    if bad.any():
        i = int(np.argmax(bad)) // max(1, numbers.size // len(y))
        raise ValueError(f"{path}: {names[i]} has the regression target {show(y[i])}, not a finite number; "
                         "targets must be numbers (for labels set data.task: classification)")
    return numbers.reshape(len(y), -1)


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
