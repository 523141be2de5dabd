"""Built-in datasets from the files shipped inside aeon (no downloads at run time)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.config import DataConfig
from training.data.dataset import SequenceData, Split, pad_sequences
from training.data.monash import m1_yearly
from training.data.splits import encode_labels, validation_split
from training.data.synthetic import synthetic_regimes
from training.data.windows import forecast_data, forecast_settings


def ucr_classification(name: str) -> Callable[[DataConfig], SequenceData]:
    """A UCR/UEA classification set with its official train/test split; validation held out of train."""

    def load(config: DataConfig) -> SequenceData:
        from aeon.datasets import load_classification

        X_train, y_train = load_classification(name, split="train")
        X_test, y_test = load_classification(name, split="test")
        labels, (y_train_idx, y_test_idx) = encode_labels(y_train, y_test)
        train, val = validation_split(_split(X_train, y_train_idx), config.val_fraction, stratify=True)
        n_features = train.X.shape[2]
        return SequenceData(
            task="classification",
            train=train,
            val=val,
            test=_split(X_test, y_test_idx),
            feature_names=[f"channel_{i}" for i in range(n_features)] if n_features > 1 else ["value"],
            label_names=labels,
            source=f"UCR/UEA {name} (aeon), official train/test split",
        )

    return load


def _split(X: np.ndarray | list[np.ndarray], y: np.ndarray) -> Split:
    X_last, lengths = _channels_last(X)
    return Split(X_last, y, lengths)


def _channels_last(X: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """aeon's (N, C, T) array, or a list of (C, T_i) arrays for unequal lengths -> padded (N, T, C) and
    lengths. Unequal lengths stay as they are: no resampling."""
    if isinstance(X, np.ndarray):
        X_last = np.ascontiguousarray(np.transpose(X, (0, 2, 1)), dtype=np.float32)
        return X_last, np.full(len(X_last), X_last.shape[1], dtype=np.int64)
    return pad_sequences([np.asarray(series, dtype=np.float32).T for series in X])


def airline(config: DataConfig) -> SequenceData:
    """Monthly international airline passengers 1949-1960 (Box & Jenkins); the last horizon is test."""
    from aeon.datasets import load_airline

    values = np.asarray(load_airline(), dtype=np.float32).reshape(-1, 1)
    window, horizon, season = forecast_settings(config)
    return forecast_data(
        [values], target_index=0, window=window, horizon=horizon,
        season=season, val_fraction=config.val_fraction,
        feature_names=["passengers"], source="Airline passengers (aeon), last horizon held out",
    )


BUILTIN: dict[str, Callable[[DataConfig], SequenceData]] = {
    "ItalyPowerDemand": ucr_classification("ItalyPowerDemand"),
    "GunPoint": ucr_classification("GunPoint"),
    "ACSF1": ucr_classification("ACSF1"),  # 1,460 steps, 10 classes of appliances, 100 + 100 series
    "JapaneseVowels": ucr_classification("JapaneseVowels"),  # 12 channels, lengths 7-29, 9 speakers
    "Airline": airline,
    "SyntheticRegimes": synthetic_regimes,  # per-step tagging (training/data/synthetic.py)
    "M1Yearly": m1_yearly,  # window 8, horizon 6, yearly (training/data/monash.py)
}
