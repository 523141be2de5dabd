"""NPZ files (read without pickle): `y` [N] labels or [N] / [N, O] regression targets, optional
`feature_names` [F], and the inputs in one of two layouts:

- `X` [N, T, F] zero-padded, with `lengths` [N] (each series' true number of steps; without it every
  series has all T steps);
- ragged series concatenated: `X` [L, F] holding the steps of every series one after another, with
  `lengths` [N] summing to L: `np.savez(path, X=np.concatenate(series), lengths=[len(s) for s in series],
  y=y)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.dataset import Split, pad_sequences
from training.data.missing import check_finite

RAGGED_HELP = ("save numeric arrays instead: X zero-padded [N, T, F] with lengths [N], or the series "
               "concatenated, np.savez(path, X=np.concatenate(series), lengths=[len(s) for s in series], "
               "y=np.asarray(labels, dtype=str))")


def read_npz(path: Path, missing: str) -> tuple[Split, list[str]]:
    """The series (X padded, raw y, lengths) and the feature names."""
    arrays = _load(path)
    if "X" not in arrays or "y" not in arrays:
        raise ValueError(f"{path}: an NPZ file needs arrays 'X' and 'y' (found {sorted(arrays)}); "
                         + RAGGED_HELP)
    X, y = arrays["X"], arrays["y"]
    if X.dtype.kind not in "iuf":  # complex too: its imaginary part was dropped with a warning
        raise ValueError(f"{path}: 'X' holds {X.dtype}, not real numbers; {RAGGED_HELP}")
    _refuse_channels_first(X, arrays, path)
    huge = np.isfinite(X) & (np.abs(X) > np.finfo(np.float32).max) if X.dtype.itemsize > 4 else None
    if huge is not None and huge.any():
        first = tuple(np.argwhere(huge)[0])
        where = ", ".join(str(int(i)) for i in first)
        raise ValueError(f"{path}: X[{where}] is {X[first]:g}, beyond the range of float32 (3.4e38) that "
                         "models compute in; rescale X")
    X, lengths = _padded(X.astype(np.float32), arrays.get("lengths"), path)
    if len(y) != len(X):
        raise ValueError(f"{path}: 'y' has {len(y)} entries for {len(X)} series in 'X'; one label per series")
    y = y.astype(str) if y.dtype.kind == "S" else y  # bytes (h5py, Python 2): the text they hold
    names = [_text(n) for n in arrays.get("feature_names", [])] or [f"feature_{i}" for i in range(X.shape[2])]
    if len(names) != X.shape[2]:
        raise ValueError(f"{path}: 'feature_names' has {len(names)} names for {X.shape[2]} features in 'X'")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{path}: 'feature_names' names {twice} more than once; each feature needs its own "
                         "name (requests and the manifest name features)")
    X = check_finite(X, lengths, names, missing, str(path), lambda i, t: f"series {i} (X[{i}]), step {t}")
    return Split(X, y, lengths), names


def _refuse_channels_first(X: np.ndarray, arrays: dict[str, np.ndarray], path: Path) -> None:
    """aeon's and sktime's arrays are [N, channels, T]: saved as they load, GunPoint (50, 1, 150) was read
    as one step of 150 features, silently. More features than steps, with neither 'feature_names' nor
    'lengths' to say the layout was meant, is refused."""
    if X.ndim != 3 or X.shape[2] <= X.shape[1] or "feature_names" in arrays or "lengths" in arrays:
        return
    n, t, f = X.shape
    raise ValueError(f"{path}: 'X' has shape {X.shape}, read as [N, T, F]: {t} step(s) of {f} features "
                     "each. aeon and sktime arrays are [N, channels, T]: save X.transpose(0, 2, 1); if it is "
                     f"{t} step(s) of {f} features, save 'feature_names' ({f} names) with it")


def _text(name: object) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _load(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError):  # numpy reads a file that is no zip archive as one pickle, and refuses it
        raise ValueError(f"{path}: not an NPZ file (a zip archive of arrays that np.savez writes); "
                         + RAGGED_HELP) from None
    with npz:
        for name in npz.files:
            try:
                arrays[name] = npz[name]
            except ValueError as exc:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
                if "allow_pickle" not in str(exc):
                    raise
                raise ValueError(f"{path}: array {name!r} is an object array (a list of sequences of "
                                 f"different lengths, or Python objects); NPZ files are read without "
                                 f"pickle: {RAGGED_HELP}") from None
    return arrays


def _padded(X: np.ndarray, lengths: np.ndarray | None, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if X.ndim == 3:
        if lengths is None:
            return X, np.full(len(X), X.shape[1], dtype=np.int64)
        lengths = _lengths(lengths, len(X), path)
        if lengths.max() > X.shape[1]:
            i = int(np.argmax(lengths))
            raise ValueError(f"{path}: lengths[{i}] = {lengths[i]} is more than the {X.shape[1]} steps "
                             "of 'X'")
        X = X.copy()
        X[np.arange(X.shape[1])[None, :] >= lengths[:, None]] = 0.0  # steps past a length are padding
        return X, lengths
    if X.ndim == 2:
        if lengths is None:
            raise ValueError(f"{path}: a 2-D 'X' [L, F] holds concatenated series and needs 'lengths' [N]; "
                             "for equal-length series save X as [N, T, F]")
        lengths = _lengths(lengths, None, path)
        if lengths.sum() != len(X):
            raise ValueError(f"{path}: 'lengths' sum to {lengths.sum()} but the concatenated 'X' has "
                             f"{len(X)} rows; they must be equal")
        return pad_sequences(np.split(X, np.cumsum(lengths)[:-1]))
    raise ValueError(f"{path}: 'X' must be [N, T, F] (zero-padded) or [L, F] (concatenated series), "
                     f"got shape {X.shape}")


def _lengths(lengths: np.ndarray, n: int | None, path: Path) -> np.ndarray:
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"{path}: 'lengths' must be a 1-D integer array (one length per series), got "
                         f"{lengths.dtype} of shape {lengths.shape}")
    if n is not None and len(lengths) != n:
        raise ValueError(f"{path}: 'lengths' has {len(lengths)} entries for {n} series in 'X'")
    if (lengths <= 0).any():
        i = int(np.argmax(lengths <= 0))
        raise ValueError(f"{path}: series {i} has length {lengths[i]} (lengths[{i}]); every series needs at "
                         "least one step: drop it from X, y and lengths")
    return lengths.astype(np.int64)
