"""Train/validation/test splits and label encoding, seeded so that runs are reproducible."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from training.data.dataset import Split


def encode_labels(*label_arrays: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Map labels (any type) to indices 0..K-1, in sorted order of their string form."""
    names = sorted({str(v) for arr in label_arrays for v in arr}, key=_natural_key)
    index = {name: i for i, name in enumerate(names)}
    return names, [np.array([index[str(v)] for v in arr], dtype=np.int64) for arr in label_arrays]


def _natural_key(name: str) -> tuple[int, float | str]:
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


def holdout(split: Split, fraction: float, seed: int, stratify: bool) -> tuple[Split, Split]:
    """Random (stratified for classification) holdout of `fraction` of a split."""
    keep, held = holdout_indices(len(split), fraction, seed, split.y if stratify else None)
    return split.subset(keep), split.subset(held)


def holdout_indices(
    n: int, fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices kept and held out; stratified by integer `labels` where every class can be split."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be between 0 and 1, got {fraction}")
    if labels is not None and not _stratifiable(labels, fraction):
        labels = None
    keep, held = train_test_split(np.arange(n), test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(keep), np.sort(held)


def _stratifiable(y: np.ndarray, fraction: float) -> bool:
    counts = np.bincount(y)
    return bool(counts[counts > 0].min() >= 2 and round(len(y) * fraction) >= len(counts))
