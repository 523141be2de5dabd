"""Per-step tagging from a few long recordings (`data.task: tagging`; docs/guides/data.md): one stream per
machine, patient or night, each step labelled. With fewer than SPLIT_SERIES recordings, holding whole
ones out would leave a test of one or two and a training set of a handful, so each recording is split in
time instead:

- test: the last `data.test_fraction` of each recording, read with the whole recording before it (a model
  serving a stream has read its past too); its earlier steps are labelled PAD_LABEL, so only the held-out
  steps count. With `data.test_path` the test file's recordings are the test, whole;
- validation: the last `data.val_fraction` of what is left, and training the steps before it, both cut
  into windows of `data.window` steps, each read from a fresh state, as a new stream is. A long recording
  read whole would be one batch of one. Windows start every 1/STRIDE of their length (further apart past
  MAX_WINDOWS of them), so that an event is seen from many starting points (GunPoint played as a
  recording: 0.84 against 0.56 with windows that overlap by half, windows of 256, seeds 0-1).

`data.window` unset: the training loop compares WIDTHS on the validation part (training/selection.py);
no one length wins everywhere. Played as recordings, BasicMotions and JapaneseVowels (activities and
speakers that change every 15-100 steps) scored 0.90 and 0.91-0.93 with windows of 32 steps, 0.86-0.87
with 256; GunPoint, whose label shows only in a gesture of ~150 steps, stays at the majority label with
windows of 32 or 64.

From SPLIT_SERIES recordings on, whole recordings are held out (training/data/files.py), as for other
tasks: the honest test of a model meant for recordings it has never seen.
"""

from __future__ import annotations

import numpy as np

from training.config import DataConfig
from training.data.dataset import PAD_LABEL, Recordings, Split

SPLIT_SERIES = 10  # fewer recordings than this: each is split in time
WIDTHS = (256, 32)  # window lengths compared where data.window is unset; the first wins a tie
STRIDE = 8  # a window starts every 1/STRIDE of its length
MAX_WINDOWS = 8192  # more would start further apart (up to a window's length: every step still read)
WARM_UP = 8192  # a candidate's validation steps: pieces of this, each read after this many steps before it
MIN_TRAINING = 2  # steps of each recording's training part: one gave a NaN spread and loss (3-step recording)


def split_in_time(series: Split, test: Split | None, config: DataConfig) -> tuple[Recordings, Split, str]:
    """The recordings with their cuts, the test, and what was done. `series` and `test` have their step
    labels encoded, PAD_LABEL after each length; `test` None: held out from the end of each recording."""
    lengths = series.lengths.astype(np.int64)
    ends = lengths if test is not None else lengths - np.ceil(lengths * config.test_fraction).astype(np.int64)
    cuts = ends - np.ceil(ends * config.val_fraction).astype(np.int64)
    short = np.flatnonzero(cuts < MIN_TRAINING)  # the held-out parts have a step at least: shares round up
    if short.size:
        i = int(short[0])
        raise ValueError(
            f"recording {i} has {int(lengths[i])} steps: too few to split in time into training "
            f"({MIN_TRAINING} steps at least), validation and test parts (data.val_fraction "
            f"{config.val_fraction:g}, data.test_fraction {config.test_fraction:g}); give longer recordings, "
            f"lower fractions, a test file (data.test_path), or {SPLIT_SERIES} recordings or more (whole "
            "ones are then held out)")
    recordings = Recordings(series, cuts, ends)
    held = "the test file's recordings, whole"
    if test is None:
        test, held = labelled(series, ends, lengths), f"the last {100 * config.test_fraction:g}% of each"
    return recordings, test, (f"split: in time ({len(series)} recording(s), fewer than {SPLIT_SERIES}): "
                              f"test {held}; validation the {100 * config.val_fraction:g}% before it")


def cut(recordings: Recordings, width: int) -> tuple[Split, Split]:
    """Training and validation windows of `width` steps."""
    zero = np.zeros_like(recordings.cuts)
    return (_windows(recordings.series, zero, recordings.cuts, width),
            _windows(recordings.series, recordings.cuts, recordings.ends, width))


def validation_labels(recordings: Recordings) -> np.ndarray:
    """The labels of every recording's validation steps, in order (what validation_pieces scores)."""
    bounds = zip(recordings.cuts.tolist(), recordings.ends.tolist(), strict=True)
    return np.concatenate([recordings.series.y[i, cut_at:end] for i, (cut_at, end) in enumerate(bounds)])


def validation_pieces(recordings: Recordings) -> Split:
    """Each recording's validation steps in pieces of WARM_UP steps, each read after the WARM_UP steps
    before it (from the recording's start where there are fewer), labelled only on its piece: how a
    candidate window is scored (training/selection.py). The test reads each recording whole from its start,
    as a stream does; here pieces are read side by side: the 800,000 steps before a 1,000,000-step
    recording's test, read as one sequence, took ~18 s per candidate. A validation part of up to WARM_UP
    steps, after up to WARM_UP of training steps, scores as read whole."""
    rows = []
    for i, (cut_at, end) in enumerate(zip(recordings.cuts.tolist(), recordings.ends.tolist(), strict=True)):
        rows += [(i, max(0, first - WARM_UP), first, min(first + WARM_UP, end))
                 for first in range(cut_at, end, WARM_UP)]
    return _gathered(recordings.series, rows)


def labelled(series: Split, start: np.ndarray, stop: np.ndarray) -> Split:
    """The whole recordings, labelled only on each one's steps start..stop: the model reads the past,
    the metrics count those steps."""
    step = np.arange(series.y.shape[1])[None, :]
    y = np.where((step >= start[:, None]) & (step < stop[:, None]), series.y, PAD_LABEL)
    return Split(series.X, y, series.lengths)


def _windows(series: Split, starts: np.ndarray, stops: np.ndarray, width: int) -> Split:
    """Each recording's steps start..stop cut into windows of `width`, one starting every width/STRIDE
    steps, the last ending at stop (a part shorter than `width`: one window of it). Where that gives more
    than MAX_WINDOWS, they start further apart, at most `width` apart: an epoch of a 1,000,000-step
    recording is then 2.5x (256 steps) to 8x (32 steps) shorter, and the time budget can cut between
    epochs."""
    pieces = []
    spacing = -(-int((stops - starts).sum()) // MAX_WINDOWS)  # ceil: what keeps the count in bounds
    for i, (start, stop) in enumerate(zip(starts.tolist(), stops.tolist(), strict=True)):
        span = min(width, stop - start)
        firsts = list(range(start, stop - span + 1, max(1, span // STRIDE, min(span, spacing))))
        if firsts[-1] != stop - span:
            firsts.append(stop - span)
        pieces += [(i, first, first, first + span) for first in firsts]
    return _gathered(series, pieces)


def _gathered(series: Split, rows: list[tuple[int, int, int, int]]) -> Split:
    """One row per (recording, begin, first, stop): its steps begin..stop, labelled from `first` on (the
    steps before it are read, not scored)."""
    steps = max(stop - begin for _, begin, _, stop in rows)
    X = np.zeros((len(rows), steps, series.X.shape[2]), dtype=series.X.dtype)
    y = np.full((len(rows), steps), PAD_LABEL, dtype=np.int64)
    for row, (i, begin, first, stop) in enumerate(rows):
        X[row, : stop - begin] = series.X[i, begin:stop]
        y[row, first - begin : stop - begin] = series.y[i, first:stop]
    return Split(X, y, np.array([stop - begin for _, begin, _, stop in rows], dtype=np.int64))
