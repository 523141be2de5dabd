"""The user's own data: CSV/Parquet in long format, or NPZ arrays. Formats are documented in README."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.config import DataConfig
from training.data.dataset import SequenceData, Split
from training.data.splits import encode_labels, holdout, holdout_indices
from training.data.windows import forecast_data


def load_user_data(config: DataConfig) -> SequenceData:
    if config.task is None:
        raise ValueError("data.task is required for user files: classification, regression or forecast")
    if config.task == "forecast":
        return _forecast_from_long(config)
    X, y, features = _read(Path(config.path or ""), config)
    if config.test_path:
        X_test, y_test, _ = _read(Path(config.test_path), config)
    else:
        X, y, X_test, y_test = _holdout_arrays(X, y, config)
    classify = config.task == "classification"
    labels: list[str] = []
    if classify:
        labels, (y, y_test) = encode_labels(y, y_test)
    else:
        y, y_test = _as_targets(y), _as_targets(y_test)
    train, val = holdout(Split(X, y), config.val_fraction, seed=1, stratify=classify)
    return SequenceData(
        task="classification" if classify else "regression",
        train=train, val=val, test=Split(X_test, y_test),
        feature_names=features, label_names=labels, source=f"user file {config.path}",
    )


def _holdout_arrays(X: np.ndarray, y: np.ndarray, config: DataConfig) -> tuple[np.ndarray, ...]:
    codes = encode_labels(y)[1][0] if config.task == "classification" else None
    keep, held = holdout_indices(len(X), config.test_fraction, seed=0, labels=codes)
    return X[keep], y[keep], X[held], y[held]


def _as_targets(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    return y.reshape(len(y), -1)


def _read(path: Path, config: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist (data.path / data.test_path)")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "X" not in npz or "y" not in npz:
                raise ValueError(f"{path}: an NPZ file needs arrays 'X' [N, T, F] and 'y' [N]")
            X, y = np.asarray(npz["X"], dtype=np.float32), npz["y"]
            names = [str(n) for n in npz["feature_names"]] if "feature_names" in npz else None
        if X.ndim != 3:
            raise ValueError(f"{path}: 'X' must be [N, T, F], got shape {X.shape}")
        return X, y, names or [f"feature_{i}" for i in range(X.shape[2])]
    frame = _read_table(path)
    return _long_to_arrays(frame, config, path)


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv, .parquet or .npz")


def _feature_columns(frame: pd.DataFrame, config: DataConfig, path: Path) -> list[str]:
    required = [config.id_column, config.time_column, config.target_column]
    missing = [c for c in required + (config.feature_columns or []) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)} "
            "(set data.id_column, data.time_column, data.target_column, data.feature_columns)"
        )
    return config.feature_columns or [c for c in frame.columns if c not in required]


def _long_to_arrays(
    frame: pd.DataFrame, config: DataConfig, path: Path
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    features = _feature_columns(frame, config, path)
    frame = frame.sort_values([config.id_column, config.time_column], kind="stable")
    groups = list(frame.groupby(config.id_column, sort=True))
    lengths = {len(g) for _, g in groups}
    if len(lengths) > 1:
        raise ValueError(
            f"{path}: series have different lengths {sorted(lengths)[:5]}...; "
            "every series must have the same number of steps"
        )
    X = np.stack([g[features].to_numpy(dtype=np.float32) for _, g in groups])
    targets = []
    for series_id, g in groups:
        values = g[config.target_column].unique()
        if len(values) != 1:
            raise ValueError(
                f"{path}: series {series_id!r} has {len(values)} different values in "
                f"{config.target_column!r}; the label/target must be constant within a series"
            )
        targets.append(values[0])
    return X, np.array(targets), features


def _forecast_from_long(config: DataConfig) -> SequenceData:
    path = Path(config.path or "")
    frame = _read_table(path)
    features = _feature_columns(frame, config, path)
    inputs = [config.target_column] + [f for f in features if f != config.target_column]
    frame = frame.sort_values([config.id_column, config.time_column], kind="stable")
    series = [g[inputs].to_numpy(dtype=np.float32) for _, g in frame.groupby(config.id_column)]
    return forecast_data(
        series, target_index=0, window=config.window, horizon=config.horizon,
        season=config.seasonal_period, val_fraction=config.val_fraction,
        feature_names=inputs, source=f"user file {path}, last horizon of each series held out",
    )
