"""optim.crop "auto" for classification: crops or none, chosen by a cross-validation of both over the
training series (the test split is never read). Random crops (training/recipe.py
`crop`) help where a class does not hinge on where in the series a pattern sits and hurt where it does,
and nothing cheaper in the data tells the two apart (measured, seed 0, crop 0.8 against none: OSULeaf
0.83 against 0.71, PLAID 0.94 against 0.87, PickupGestureWiimoteZ 0.82 against 0.72; ACSF1 0.74 against
0.86, ItalyPowerDemand 0.95 against 0.97).

Compared where it can pay and the comparison can be read: classification with a final fit (otherwise
the validation series stop the run early: `gru tune` trials), at least FEW_PER_CLASS series per class
(fewer: the few-per-class rule crops), series of MIN_STEPS steps or more at the median (a fifth of a short
series is a few steps; ItalyPowerDemand lost with crops), at least MIN_SCORED training series, one
process. Elsewhere no crops. The comparison is FOLDS-fold cross-validation over the training series
(validation split included; at most MAX_SCORED of them), stratified by class: each candidate is trained
on one part and scored on the other, so every series is scored once. A single 80/20 split was not
enough: ACSF1's 20 validation series preferred crops (0.70 against 0.65), which lose 0.12 on its test
split. Each run is an ordinary quiet run (`selection/crop-<share>/<fold>/` in the run folder) with its
part of CANDIDATE_SHARE of the budget left; the candidate with more series right wins, then the lower
mean loss, then no crops.

data.window unset, for tagging split in time (training/data/recordings.py): the WIDTHS compared the same
way, but on the validation part of each recording, read with its past as the test is (windows of any
length read it alike; in pieces, each after the 8,192 steps before it), each candidate trained on the
training part's windows of its length; the lower validation loss wins."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.config import TrainConfig
from training.data import SequenceData
from training.data.recordings import WIDTHS, cut, validation_labels, validation_pieces
from training.data.splits import holdout_indices, stratified_folds
from training.defaults import FEW_PER_CLASS, TARGET_STEPS, merge

CANDIDATES = (1.0, 0.8)  # no crops first: what wins a tie
CANDIDATE_SHARE = 0.25  # of the budget left, for each candidate (all its folds)
FOLDS = 2
MIN_STEPS = 2 * TARGET_STEPS
MIN_SCORED = 30  # training series: each one scored once
# enough to read a difference of a few points; more costs the final model its epochs (PLAID's 537 series:
# the comparison took 46 s of the 120, and the final run was cut to 56 of its 100 epochs at load 3)
MAX_SCORED = 200


def compares_crops(config: TrainConfig, data: SequenceData, distributed: bool) -> bool:
    """Whether optim.crop is chosen by comparing candidates (see the module's docstring)."""
    if config.optim.crop != "auto" or data.task != "classification" or data.sharded or distributed:
        return False
    series = len(data.train) + len(data.val)
    if config.optim.final_fit is False or series < MIN_SCORED:
        return False
    return (series / max(1, data.output_size) >= FEW_PER_CLASS
            and float(np.median(data.train.lengths)) >= MIN_STEPS)


def folds(data: SequenceData) -> list[SequenceData]:
    """The candidates' data: each part of the training series (validation included; a stratified sample
    of MAX_SCORED of them where there are more) as a test split, the rest to train on; no validation split
    (with a final fit, nothing reads one)."""
    series = merge(data.train, data.val, data.task)
    if len(series) > MAX_SCORED:
        _, sample = holdout_indices(len(series), MAX_SCORED / len(series), seed=0, labels=series.y)
        series = series.subset(sample)
    empty = series.subset(np.arange(0))
    return [dataclasses.replace(data, train=series.subset(fit), val=empty, test=series.subset(scored))
            for fit, scored in stratified_folds(len(series), FOLDS, seed=0, labels=series.y)]


def candidate(config: TrainConfig, share: float, fold: int, budget: float | None,
              run_dir: str) -> TrainConfig:
    """One candidate's run on one fold: the run's own config, with this crop, one model, its budget."""
    return config.with_values({"optim.crop": share, "optim.members": 1, "optim.final_fit": True,
                               "optim.time_budget": budget, "optim.plots": False,
                               "optim.tensorboard": False, "run_dir": f"{run_dir}/crop-{share:g}",
                               "name": str(fold)})


def winner(scores: dict[float, list[tuple[int, dict[str, Any]]]], seconds: float) -> tuple[float, str]:
    """The crop the run trains with, and the line that says why; `scores`: per candidate, each fold's
    number of series scored and its test metrics."""
    series = sum(n for n, _ in scores[CANDIDATES[0]])
    right = {share: sum(round(n * m["accuracy"]) for n, m in runs) for share, runs in scores.items()}
    loss = {share: sum(n * m["loss"] for n, m in runs) / series for share, runs in scores.items()}
    best = min(CANDIDATES, key=lambda share: (-right[share], loss[share]))
    told = ", ".join(f"{'crop ' + format(share, 'g') if share < 1 else 'no crops'} "
                     f"{right[share] / series:.3f} (loss {loss[share]:.3g})" for share in CANDIDATES)
    return best, (f"optim.crop={best:g} (auto: {FOLDS}-fold cross-validation on the {series} training "
                  f"series, accuracy {told}; {FOLDS * len(CANDIDATES)} runs in {seconds:.0f} s)")


def compares_windows(config: TrainConfig, data: SequenceData, distributed: bool) -> bool:
    """Whether data.window is chosen by comparing WIDTHS: tagging split in time, with a final fit (as for
    crops), one process."""
    return (data.recordings is not None and config.data.window is None and config.optim.final_fit is not False
            and not distributed)


def window_trial(data: SequenceData, width: int) -> SequenceData:
    """A candidate's data: the training part's windows of `width`; the validation part as its test."""
    assert data.recordings is not None
    train, _ = cut(data.recordings, width)
    return dataclasses.replace(data, train=train, val=train.subset(np.arange(0)),
                               test=validation_pieces(data.recordings))


def with_window(data: SequenceData, width: int) -> SequenceData:
    """The run's data with training and validation windows of `width`."""
    assert data.recordings is not None
    train, val = cut(data.recordings, width)
    return dataclasses.replace(data, train=train, val=val)


def window_candidate(config: TrainConfig, width: int, budget: float | None, run_dir: str) -> TrainConfig:
    return config.with_values({"data.window": width, "optim.members": 1, "optim.final_fit": True,
                               "optim.time_budget": budget, "optim.plots": False, "optim.tensorboard": False,
                               "run_dir": f"{run_dir}/window-{width}", "name": "0"})


def window_checkpoint(run_dir: Path, width: int, data: SequenceData) -> tuple[Path | None, str]:
    """The checkpoint window_candidate's run of `width` wrote under `run_dir`, which the final model starts
    from, and the line that says so; None where it does not exist or where its validation log-loss does
    not beat predicting the validation steps' label frequencies: such a winner learnt nothing to start
    from (ArrowHead played as recordings, seed 0: loss 1.15 against ln 3, 0.546 warm against 0.689
    fresh)."""
    path = run_dir / f"window-{width}" / "0" / "checkpoint.pt"
    metrics = path.parent / "test_metrics.json"  # written once the candidate's run has ended
    if not (path.exists() and metrics.exists()):
        return None, ""
    loss = json.loads(metrics.read_text())["loss"]
    assert data.recordings is not None
    counts = np.bincount(validation_labels(data.recordings))
    share = counts[counts > 0] / counts.sum()
    frequencies = float(-(share * np.log(share)).sum())
    if loss >= frequencies:
        return None, (f"model: starts fresh (the window comparison's winner, validation loss {loss:.3g}, "
                      f"does not beat the label frequencies' {frequencies:.3g})")
    return path, f"model: starts from the window comparison's winner ({path}, validation loss {loss:.3g})"


def window_winner(scores: dict[int, dict[str, Any]], data: SequenceData, seconds: float) -> tuple[int, str]:
    """The window length the run trains with and the line that says why; `scores`: each candidate's
    metrics on the validation steps."""
    assert data.recordings is not None
    steps = len(validation_labels(data.recordings))
    # the log-loss first: it tells a candidate stuck at the majority label from one a step behind it
    # (GunPoint: 0.599 right at loss 0.58 against 0.600 at 0.692, the plateau); then the steps right
    best = min(WIDTHS, key=lambda width: (scores[width]["loss"], -round(steps * scores[width]["accuracy"])))
    told = ", ".join(f"{width} steps {scores[width]['accuracy']:.3f} (loss {scores[width]['loss']:.3g})"
                     for width in WIDTHS)
    return best, (f"data.window={best} (auto: compared on the {steps} validation steps, accuracy {told}; "
                  f"{len(WIDTHS)} runs in {seconds:.0f} s)")
