"""optim.crop "auto" for classification: crops or none, chosen by training both on the training split and
comparing them on its validation series (the test split is never read). Random crops (training/recipe.py
`crop`) help where a class does not hinge on where in the series a pattern sits and hurt where it does,
and nothing cheaper in the data tells the two apart (measured, seed 0, crop 0.8 against none: OSULeaf
0.83 against 0.71, PLAID 0.94 against 0.87, PickupGestureWiimoteZ 0.82 against 0.72; ACSF1 0.74 against
0.86, ItalyPowerDemand 0.95 against 0.97).

Compared only where it can pay and the comparison can be read: classification with a final fit (the
validation series are otherwise the run's own early stopping; `gru tune` trials), at least FEW_PER_CLASS
series per class (fewer: the few-per-class rule crops), series of MIN_STEPS steps or more at the median (a
fifth of a short series is a few steps; ItalyPowerDemand lost with crops), at least MIN_HELD_OUT
validation series (ACSF1's 20 preferred crops, 0.70 against 0.65, which lost 0.12 on its test split; one
series fewer right is 5 points there), one process. Elsewhere no crops. Each candidate is an ordinary quiet
run (`selection/crop-<share>/` in the run folder) on the training series with CANDIDATE_SHARE of the
budget left; the more accurate on the validation series wins, then the lower loss, then no crops."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from training.config import TrainConfig
from training.data import SequenceData
from training.defaults import FEW_PER_CLASS, TARGET_STEPS

CANDIDATES = (1.0, 0.8)  # no crops first: what wins a tie
CANDIDATE_SHARE = 0.25  # of the budget left, for each candidate
MIN_STEPS = 2 * TARGET_STEPS
MIN_HELD_OUT = 30  # validation series: from 150 training series at data.val_fraction 0.2


def compares_crops(config: TrainConfig, data: SequenceData, distributed: bool) -> bool:
    """Whether optim.crop is chosen by comparing candidates (see the module's docstring)."""
    if config.optim.crop != "auto" or data.task != "classification" or data.sharded or distributed:
        return False
    if config.optim.final_fit is False or len(data.val) < MIN_HELD_OUT:
        return False
    per_class = (len(data.train) + len(data.val)) / max(1, data.output_size)
    return per_class >= FEW_PER_CLASS and float(np.median(data.train.lengths)) >= MIN_STEPS


def fold(data: SequenceData) -> SequenceData:
    """The candidates' data: trained on the training series, scored on the validation series as their
    test split (with a final fit, nothing else reads a validation split)."""
    empty = data.val.subset(np.arange(0))
    return dataclasses.replace(data, val=empty, test=data.val)


def candidate(config: TrainConfig, share: float, budget: float | None, run_dir: str) -> TrainConfig:
    """One candidate's config: the run's own, with this crop, one model, its share of the budget."""
    return config.with_values({"optim.crop": share, "optim.members": 1, "optim.final_fit": True,
                               "optim.time_budget": budget, "optim.plots": False,
                               "optim.tensorboard": False, "run_dir": run_dir, "name": f"crop-{share:g}"})


def winner(scores: dict[float, dict[str, Any]], held_out: int, seconds: float) -> tuple[float, str]:
    """The crop the run trains with, and the line that says why."""
    best = min(CANDIDATES, key=lambda share: (-scores[share]["accuracy"], scores[share]["loss"]))
    told = ", ".join(f"{'crop ' + format(share, 'g') if share < 1 else 'no crops'} "
                     f"{scores[share]['accuracy']:.3f} (loss {scores[share]['loss']:.3g})"
                     for share in CANDIDATES)
    return best, (f"optim.crop={best:g} (auto: validation accuracy {told}, on {held_out} of the training "
                  f"series held out; both candidates trained in {seconds:.0f} s)")
