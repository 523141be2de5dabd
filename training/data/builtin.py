"""Built-in datasets from the files shipped inside aeon (no downloads at run time)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.config import DataConfig
from training.data.dataset import SequenceData, Split
from training.data.monash import m1_yearly
from training.data.splits import encode_labels, holdout
from training.data.windows import forecast_data


def ucr_classification(name: str) -> Callable[[DataConfig], SequenceData]:
    """A UCR/UEA classification set with its official train/test split; validation held out of train."""

    def load(config: DataConfig) -> SequenceData:
        from aeon.datasets import load_classification

        X_train, y_train = load_classification(name, split="train")
        X_test, y_test = load_classification(name, split="test")
        labels, (y_train_idx, y_test_idx) = encode_labels(y_train, y_test)
        train = Split(_channels_last(X_train), y_train_idx)
        train, val = holdout(train, config.val_fraction, seed=0, stratify=True)
        n_features = train.X.shape[2]
        return SequenceData(
            task="classification",
            train=train,
            val=val,
            test=Split(_channels_last(X_test), y_test_idx),
            feature_names=[f"channel_{i}" for i in range(n_features)] if n_features > 1 else ["value"],
            label_names=labels,
            source=f"UCR/UEA {name} (aeon), official train/test split",
        )

    return load


def _channels_last(X: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(X, (0, 2, 1)), dtype=np.float32)  # (N, C, T) -> (N, T, C)


def airline(config: DataConfig) -> SequenceData:
    """Monthly international airline passengers 1949-1960 (Box & Jenkins); the last horizon is test."""
    from aeon.datasets import load_airline

    values = np.asarray(load_airline(), dtype=np.float32).reshape(-1, 1)
    return forecast_data(
        [values], target_index=0, window=config.window, horizon=config.horizon,
        season=config.seasonal_period, val_fraction=config.val_fraction,
        feature_names=["passengers"], source="Airline passengers (aeon), last horizon held out",
    )


BUILTIN: dict[str, Callable[[DataConfig], SequenceData]] = {
    "ItalyPowerDemand": ucr_classification("ItalyPowerDemand"),
    "GunPoint": ucr_classification("GunPoint"),
    "Airline": airline,
    "M1Yearly": m1_yearly,  # set data.window (e.g. 12), data.horizon=6, data.seasonal_period=1
}
