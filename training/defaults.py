"""Defaults chosen from the data: the settings left at "auto" are resolved from the training split's
lengths, series count and task before the model is built, and printed, so that a run says what it did.

- model.frontend: "conv" for classification (the measured winner on long and short sets) and for
  regression on series of 128 steps or more; "none" for shorter regression and forecasting windows (M1's
  research figures come from the plain GRU) and for tagging (it answers at every step);
- model.patch: the front end's stride, so that the GRU reads about TARGET_STEPS steps of a median
  sequence (1 for tagging and with no front end), at most MAX_STRIDE: on ACSF1 (1,460 steps) stride 23
  (64 GRU steps) gave 0.78 against 0.85 for stride 12 (122 steps), the conv's windows then spanning 24
  steps instead of 46;
- optim.batch_size: a quarter of the series, between 4 and 16 (64 from 2,000 series);
- optim.max_epochs: at least 1,000 optimiser steps (small sets need many epochs), and 100 epochs unless
  that exceeds 10,000 steps (large sets need few); never more than 200 epochs.
"""

from __future__ import annotations

import math

import numpy as np

from training.config import VALUE_TASKS, TrainConfig
from training.data.dataset import Split

TARGET_STEPS, MAX_STRIDE = 64, 12
MIN_STEPS, USUAL_EPOCHS, MAX_STEPS, MAX_EPOCHS = 1_000, 100, 10_000, 200
SMALL_VALUE_SET = 1_000  # regression/forecast series (or windows) below which validation is held out


def resolve(config: TrainConfig, train: Split) -> list[str]:
    """Fill in every "auto" setting from the training series (`model.task`, `input_size` and
    `output_size` already set from the data); return what the run will do, as lines to print."""
    model, optim = config.model, config.optim
    median = int(np.median(train.lengths)) if len(train) else 1
    classes = f", {model.output_size} classes" if model.task == "classification" else ""
    if model.head == "sigmoid":  # one output for two classes
        classes = ", 2 classes (one sigmoid output)"
    lines = [f"data: {len(train)} training series, lengths {int(train.lengths.min())}-"
             f"{int(train.lengths.max())} (median {median}), {train.X.shape[2]} feature(s), "
             f"task {model.task}{classes}"]
    if model.frontend == "auto":
        long = median >= 2 * TARGET_STEPS  # a stride of 2 or more
        conv = model.task == "classification" or (model.task == "regression" and long)
        model.frontend = "conv" if conv else "none"
        why = model.task if model.task != "regression" else f"regression, median length {median}"
        lines.append(f"model.frontend={model.frontend} (auto: {why})")
    if model.patch == "auto":
        per_step = model.task == "tagging" or model.frontend == "none"
        stride = 1 if per_step else min(MAX_STRIDE, max(1, round(median / TARGET_STEPS)))
        model.patch = stride
        lines.append(f"model.patch={stride} (auto: ~{math.ceil(median / stride)} GRU steps "
                     f"for the median length)")
    if optim.batch_size == "auto":
        optim.batch_size = 64 if len(train) >= 2000 else min(16, max(4, len(train) // 4))
        lines.append(f"optim.batch_size={optim.batch_size} (auto)")
    batch = int(optim.batch_size)
    if optim.max_epochs == "auto":
        per_epoch = max(1, math.ceil(len(train) / batch))
        usual = min(USUAL_EPOCHS, math.ceil(MAX_STEPS / per_epoch))
        optim.max_epochs = min(MAX_EPOCHS, max(math.ceil(MIN_STEPS / per_epoch), usual))
        lines.append(f"optim.max_epochs={optim.max_epochs} (auto: {optim.max_epochs * per_epoch} steps of "
                     f"batch {optim.batch_size})")
    return lines + [summary(config)]


def resolve_fit(config: TrainConfig, task: str, series: int) -> list[str]:
    """optim.final_fit "auto": a final fit, except for regression and forecasts from fewer than
    SMALL_VALUE_SET series (or windows): those hold the validation split out, which picks the epoch and
    how much of its correction to the baseline the model keeps (training/shrink.py). On CardanoSentiment
    (74 series) and yearly sunspots (212 windows) a final fit lost clearly to the mean and to the seasonal
    naive; on M1 yearly (1,378 windows) holding out lost (MASE 3.83 against 3.69)."""
    if config.optim.final_fit != "auto":
        return []
    held_out = task in VALUE_TASKS and series < SMALL_VALUE_SET
    config.optim.final_fit = not held_out
    why = f"{task}, {series} series" if task in VALUE_TASKS else task
    return [f"optim.final_fit={str(config.optim.final_fit).lower()} (auto: {why})"]


def summary(config: TrainConfig) -> str:
    m, o = config.model, config.optim
    direction = "bidirectional " if m.bidirectional else ""
    kept = "final fit, last epoch kept" if o.final_fit else "best validation epoch kept"
    stride = int(m.patch)
    front = {"conv": f"causal conv (kernel {m.conv_kernel * stride}, stride {stride}) + conv (kernel 3)",
             "patch": f"patches of {stride} step(s)", "none": "no front end"}[str(m.frontend)]
    # the loop augments classification and tagging only: a perturbed window has another forecast
    augmented = "no augmentation" if m.task in VALUE_TASKS else f"jitter {o.jitter:g}, scaling {o.scaling:g}"
    return (f"model: {front} -> {direction}GRU {m.num_layers}x{m.hidden_size} "
            f"(reset {m.reset}) -> readout {'+'.join(m.readout)} -> head; "
            f"optim: {o.optimizer} {o.schedule} lr {o.learning_rate:g}, {o.max_epochs} epochs x batch "
            f"{o.batch_size}, {augmented}, {kept}")
