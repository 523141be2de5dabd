"""Train/validation/test splits and label encoding, seeded so that runs are reproducible."""

from __future__ import annotations

import math
import unicodedata

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from training.data.dataset import Split


def encode_labels(*label_arrays: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Map labels (any type) to indices 0..K-1, in natural order of their string form. Labels that are
    the same number are one class, named as the first array writes it: a test file's 0.0/1.0 (a float
    column) are a training file's 0/1, not two more classes; spaces around a label are not part of it."""
    texts = [dict.fromkeys(_text(v) for v in arr) for arr in label_arrays]  # in order of appearance
    names: dict[float | str, str] = {}  # a label's class -> its name, the first text seen
    for seen in texts:
        for text in seen:
            names.setdefault(_class_of(text), text)
    order = sorted(names, key=lambda key: _natural_key(names[key]))
    index = {key: i for i, key in enumerate(order)}
    codes = {text: index[_class_of(text)] for seen in texts for text in seen}
    return [names[key] for key in order], [np.array([codes[_text(v)] for v in arr], dtype=np.int64)
                                           for arr in label_arrays]


def label_codes(names: list[str], values: np.ndarray) -> np.ndarray:
    """Each value's index in `names` (the same number is the same label, as in encode_labels); -1 where
    it is none of them."""
    index = {_class_of(name): i for i, name in enumerate(names)}
    return np.array([index.get(_class_of(_text(v)), -1) for v in values], dtype=np.int64)


def _text(label: object) -> str:
    """A label as text, without the spaces around it, its accents composed (NFC): a spreadsheet's 'fault '
    (a trailing space typed into some cells) was a class apart from 'fault', and 'café' typed on macOS
    (e + a combining accent) one apart from 'café', each silently splitting a class in two."""
    return unicodedata.normalize("NFC", str(label).strip())


def _class_of(text: str) -> float | str:
    if text.lower() in ("true", "false"):  # pandas writes True, R writes TRUE
        return text.lower()
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _natural_key(name: str) -> tuple[int, float | str]:
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


def validation_split(train: Split, fraction: float, stratify: bool) -> tuple[Split, Split]:
    """The validation split held out of the training split: the same seeded rule for built-in sets and
    user files, so that a set written to a file and read back splits as the built-in does."""
    return holdout(train, fraction, seed=0, stratify=stratify)


def holdout(split: Split, fraction: float, seed: int, stratify: bool) -> tuple[Split, Split]:
    """Random (stratified for classification) holdout of `fraction` of a split."""
    keep, held = holdout_indices(len(split), fraction, seed, split.y if stratify else None)
    return split.subset(keep), split.subset(held)


def holdout_indices(
    n: int, fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices kept and held out; stratified by integer `labels` where every class can be split. A small
    set holds out at least one series of every class (36 series of 10 classes: 10, not 8)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be between 0 and 1, got {fraction}")
    held = math.ceil(n * fraction)  # what train_test_split holds out for a fraction
    if n - held < 1:
        raise ValueError(f"cannot hold out {fraction:g} of {n} series and train on the rest "
                         "(data.test_fraction, then data.val_fraction of what is left): give at least 3 "
                         "series, or a test file (data.test_path) and more series")
    size: float | int = fraction
    if labels is not None:
        counts = np.bincount(labels)
        single = counts[labels] == 1  # a class of one series: kept, so that the model learns it
        if single.any() and (~single).sum() >= 2:
            rest = np.flatnonzero(~single)
            kept, held_out = holdout_indices(len(rest), fraction, seed, labels[rest])
            return np.sort(np.r_[np.flatnonzero(single), rest[kept]]), rest[held_out]
        classes = int((counts > 0).sum())
        if held < classes:  # a small set: at least one series of every class
            held = size = classes
        if counts[counts > 0].min() < 2 or n - held < classes:
            labels, size = None, fraction  # some class cannot be on both sides
    kept, held_out = train_test_split(np.arange(n), test_size=size, random_state=seed, stratify=labels)
    return np.sort(kept), np.sort(held_out)


def stratified_folds(n: int, k: int, seed: int, labels: np.ndarray | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, validation) index pairs that cover every index once as validation; stratified by
    integer `labels` where every class has at least k members (a small set's epoch choice by k-fold)."""
    if not 2 <= k <= n:
        raise ValueError(f"k-fold needs 2 <= k <= {n} (the number of series), got k={k}")
    index = np.arange(n)
    if labels is not None and np.bincount(labels)[np.bincount(labels) > 0].min() >= k:
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(index, labels)
    else:
        folds = KFold(n_splits=k, shuffle=True, random_state=seed).split(index)
    return [(np.sort(train), np.sort(val)) for train, val in folds]
