"""Where a forecast without a season starts: what its model answers before the GRU corrects it, and
what it answers where the correction is dropped (training/shrink.py).

- "mean": the training mean (no skip): each window's level times the training windows' mean ratio of
  target to level (training/normalise.py), or the training mean itself without window scaling;
- "naive": the last value repeated (model.seasonal_skip=1);
- "half drift" and "drift": the naive plus half or all of the window's drift, its slope from the first
  to the last step, per step ahead (model.drift 0.5 or 1).

training/defaults.py picks one; bench/short_series.py scores them on public series.
"""

from __future__ import annotations

import numpy as np

from training.data import SequenceData, Split

DRIFTS = {"naive": 0.0, "half drift": 0.5, "drift": 1.0}  # the naive's starts: their model.drift
STARTS = ("mean", *DRIFTS)


def levels(split: Split, scaled: bool) -> np.ndarray:
    """(N, 1): each window's mean level of the target, or ones without window scaling."""
    if not scaled:
        return np.ones((len(split), 1))
    valid = np.arange(split.X.shape[1]) < split.lengths[:, None]
    return ((split.X[:, :, 0] * valid).sum(axis=1) / split.lengths)[:, None]


def forecasts(split: Split, ratio: np.ndarray, scaled: bool) -> dict[str, np.ndarray]:
    """Each start's forecasts (N, H) from the windows of `split` (target first); `ratio` (H,): the
    training windows' mean target over level."""
    X, lengths = split.X, split.lengths
    last = X[np.arange(len(X)), lengths - 1, 0][:, None]
    slope = ((last[:, 0] - X[:, 0, 0]) / np.maximum(lengths - 1, 1))[:, None]
    ahead = np.arange(1, len(ratio) + 1)
    naive = {name: last + share * slope * ahead for name, share in DRIFTS.items()}
    return {"mean": levels(split, scaled) * ratio, **naive}


def training_ratio(data: SequenceData) -> np.ndarray:
    """(H,): the training windows' mean target over level, which the "mean" start scales."""
    return (data.train.y / levels(data.train, data.window_scaling)).mean(axis=0)


def validation_errors(data: SequenceData) -> dict[str, float]:
    """Each start's mean squared error on the validation windows, in units of each window's level where
    windows are scaled (so that a series of large values does not outweigh the rest)."""
    scale = levels(data.val, data.window_scaling)
    made = forecasts(data.val, training_ratio(data), data.window_scaling)
    return {name: float((((f - data.val.y) / scale) ** 2).mean()) for name, f in made.items()}
