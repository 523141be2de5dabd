"""Settings chosen from the data: what `auto` resolves to for short, long, small and large training sets,
and that what a user set stays as set."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from training.config import ResolvedConfig, TrainConfig, load_config
from training.data.dataset import SequenceData, Split
from training.defaults import resolve as resolve_from


def _split(count: int, lengths: list[int], features: int = 1) -> Split:
    steps = np.resize(np.array(lengths), count)
    X = np.zeros((count, int(steps.max()), features), np.float32)
    return Split(X, np.zeros(count, np.int64), steps.astype(np.int64))


def _config(*overrides: str, task: str = "classification") -> tuple[TrainConfig, str]:
    return load_config(None, ["optim.final_fit=true", *overrides]), task


def resolve(config_and_task: tuple[TrainConfig, str], train: Split) -> tuple[ResolvedConfig, list[str]]:
    """Resolve against data whose training split is `train` (no validation series): three labels, or
    one target per series."""
    config, task = config_and_task
    labels = ["a", "b", "c"] if config.model.head == "softmax" else ["a", "b"]
    if task in ("regression", "forecast"):
        train, labels = Split(train.X, np.zeros((len(train), 1), np.float32), train.lengths), []
    if task == "tagging":  # a label per step
        train = Split(train.X, np.zeros(train.X.shape[:2], np.int64), train.lengths)
    empty = Split(train.X[:0], train.y[:0], train.lengths[:0])
    data = SequenceData(task, train, empty, empty, ["x"] * train.X.shape[2], labels)  # type: ignore[arg-type]
    resolved, lines = resolve_from(config, data)
    assert any(line.startswith("data: ") for line in lines)  # after optim.final_fit's line when auto
    return resolved, lines


@pytest.mark.parametrize("lengths, patch", [([24], 1), ([150], 2), ([1460], 12), ([7, 15, 29], 1),
                                            ([29, 60, 80], 1)])
def test_the_patch_gives_the_gru_about_sixty_four_steps_of_a_median_sequence(lengths, patch) -> None:
    config, lines = resolve(_config(), _split(60, lengths))
    assert config.model.patch == patch
    assert any(line.startswith(f"model.patch={patch}") for line in lines)


@pytest.mark.parametrize("lengths, patch", [([29, 136, 361], 3), ([100, 300, 1344], 11)])
def test_lengths_that_differ_tenfold_keep_the_longest_tenth_within_128_gru_steps(lengths, patch) -> None:
    config, lines = resolve(_config(), _split(60, lengths))
    assert config.model.patch == patch
    assert any("for the 90th percentile (lengths differ" in line for line in lines)


def test_tagging_reads_every_step() -> None:
    config, _ = resolve(_config(task="tagging"), _split(60, [1460]))
    assert (config.model.frontend, config.model.patch) == ("none", 1)


@pytest.mark.parametrize("series, batch, epochs", [
    (36, 9, 200),  # tiny: 4 steps an epoch, the 200-epoch cap
    (67, 16, 200),  # ItalyPowerDemand: 5 steps an epoch
    (270, 16, 100),  # JapaneseVowels: 17 steps an epoch, 100 epochs
    (1197, 16, 100),  # M1 yearly's windows: 75 steps an epoch
    (10_000, 64, 64),  # large: 157 steps an epoch, 10,000 steps
    (100_000, 64, 7),  # larger: at least 1,000 steps
])
def test_batch_and_epochs_scale_with_the_number_of_series(series, batch, epochs) -> None:
    config, _ = resolve(_config(), _split(series, [24]))
    assert (config.optim.batch_size, config.optim.max_epochs) == (batch, epochs)


def test_what_the_user_set_is_kept_and_the_run_is_described() -> None:
    user = _config("model.patch=5", "optim.batch_size=32", "optim.max_epochs=7")
    config, lines = resolve(user, _split(60, [1460], features=3))
    assert (config.model.patch, config.optim.batch_size, config.optim.max_epochs) == (5, 32, 7)
    assert lines[0] == ("data: 60 training series, lengths 1460-1460 (median 1460), 3 feature(s), "
                        "task classification, 3 classes")
    assert "causal conv (kernel 10, stride 5)" in lines[-1] and "7 epochs x batch 32" in lines[-1]


def test_a_forecast_counts_its_windows_not_series() -> None:
    """A forecast trains on windows cut from its series (one El Nino file: 551): before, the run said
    "551 series" and "441 training series", which reads as a misread file of one series."""
    _, lines = resolve(_config("optim.final_fit=auto", task="forecast"), _split(300, [24]))
    assert lines[0] == "optim.final_fit=false (auto: forecast, 300 windows)"
    assert any(line.startswith("data: 300 training windows, lengths 24-24 (median 24), 1 feature(s)")
               for line in lines)


def test_a_binary_sigmoid_model_is_described_with_two_classes() -> None:
    config, lines = resolve(_config("model.head=sigmoid"), _split(60, [24]))
    assert config.model.output_size == 1  # one output: P(second label)
    assert lines[0].endswith("task classification, 2 classes (one sigmoid output)")


@pytest.mark.parametrize("task, length, frontend, patch", [
    ("classification", 1460, "conv", 12), ("classification", 24, "conv", 1), ("regression", 1460, "conv", 12),
    ("regression", 8, "none", 1), ("tagging", 1460, "none", 1)])
def test_the_front_end_is_chosen_from_the_task_and_lengths(task, length, frontend, patch) -> None:
    config, lines = resolve(_config(task=task), _split(60, [length]))
    assert (config.model.frontend, config.model.patch) == (frontend, patch)
    assert any(line.startswith(f"model.frontend={frontend} (auto: {task}") for line in lines)


def test_a_front_end_the_user_set_is_kept() -> None:
    config, _ = resolve(_config("model.frontend=patch"), _split(60, [1460]))
    assert (config.model.frontend, config.model.patch) == ("patch", 12)


def test_resolving_leaves_the_config_as_it_was_and_gives_a_frozen_one() -> None:
    user, task = _config()
    config, _ = resolve((user, task), _split(60, [1460]))
    assert (user.model.patch, user.model.frontend, user.optim.max_epochs) == ("auto", "auto", "auto")
    assert (config.model.patch, config.model.frontend, config.optim.max_epochs) == (12, "conv", 200)
    with pytest.raises(ValidationError, match="frozen"):
        config.optim.max_epochs = 3
    with pytest.raises(ValidationError, match="frozen"):
        user.optim.max_epochs = 3


def test_a_config_with_auto_left_is_not_a_resolved_one() -> None:
    with pytest.raises(ValueError, match="model.patch"):
        ResolvedConfig.from_dict(load_config(None, ["model.frontend=conv"]).to_dict())


def test_few_series_per_class_get_a_smaller_model_pooled_readout_and_crops_except_what_the_user_set() -> None:
    config, lines = resolve(_config("model.dropout=0.2"), _split(12, [2000]))  # 4 series per class
    assert (config.model.hidden_size, config.model.dropout, config.model.readout) == (64, 0.2, ["max"])
    assert (config.optim.weight_decay, config.optim.scaling, config.optim.crop) == (0.05, 0.2, 0.8)
    assert config.optim.time_warp == 0.2  # speed, as 1-NN DTW reads through it
    assert any(line.startswith("model.hidden_size=64, optim.weight_decay=0.05") and "optim.crop=0.8, "
               "optim.time_warp=0.2, model.readout=[max] (auto: 4.0 training series per class" in line
               for line in lines)
    assert "crop 0.8, time warp 0.2" in lines[-1] and "readout max ->" in lines[-1]
    # more steps for the stronger augmentation: at least 2,000 (3 batches of 4 an epoch), at most 400 epochs
    assert config.optim.max_epochs == 400 and "optim.max_epochs=400 (auto: 1200 steps of batch 4, at least " \
        "2,000 for few series per class)" in lines
    config, lines = resolve(_config(), _split(15, [2000]))  # 5 per class: the usual settings
    assert (config.model.hidden_size, config.optim.crop, config.optim.max_epochs) == (128, 1, 200)
    assert config.optim.time_warp == 0
    assert config.model.readout == ["last", "mean", "max"]
    assert "crop" not in lines[-1]


def test_the_summary_says_what_the_augmentation_and_averaging_do() -> None:
    """optim.average and optim.time_warp: the summary said "last epoch kept" and nothing of the warp."""
    _, lines = resolve(_config("optim.average=0.5", "optim.time_warp=0.2"), _split(60, [24]))
    assert lines[-1].endswith(", time warp 0.2, mixup 0.2, final fit, the mean of the weights over its last "
                              "50% of epochs kept")
    _, lines = resolve(_config(), _split(60, [24]))
    assert lines[-1].endswith("scaling 0.1, mixup 0.2, final fit, last epoch kept")
    _, lines = resolve(_config("optim.mixup=0"), _split(60, [24]))
    assert lines[-1].endswith("scaling 0.1, final fit, last epoch kept")


def test_mixup_is_on_for_classification_normalised_globally_and_off_where_each_series_has_its_scale() -> None:
    """Per-series normalisation: the model reads each series' scale, which a mix in normalised units cannot
    keep (PLAID and Covid3Month_disc lost 0.02-0.04 with mixup); other tasks read no mixup."""
    config, lines = resolve(_config(), _split(60, [24]))
    assert config.optim.mixup == 0.2 and "optim.mixup=0.2 (auto: classification, series normalised " \
        "globally)" in lines
    config, lines = resolve(_config("model.normalise=series"), _split(60, [24]))
    assert config.optim.mixup == 0 and "mixup" not in lines[-1]
    assert any(line.startswith("optim.mixup=0 (auto: each series is normalised by its own scale")
               for line in lines)
    for task in ("regression", "tagging"):
        config, lines = resolve(_config(task=task), _split(60, [24]))
        assert config.optim.mixup == 0 and not any("mixup" in line for line in lines)
    config, _ = resolve(_config("optim.mixup=0.4", "model.normalise=series"), _split(60, [24]))
    assert config.optim.mixup == 0.4  # what you set stays
    for bad in ("-0.1", "nan", "inf", "lots"):
        with pytest.raises(ValueError, match="optim.mixup must be a number of at least 0 or 'auto'"):
            load_config(None, [f"optim.mixup={bad}"])


def test_series_of_one_step_and_many_features_are_named_as_a_file_written_the_wrong_way_round() -> None:
    """Steps written as columns beside a step column of one value read as one step of many features: the
    run warns, naming the long format; a few features at one step, or longer series, get no warning."""
    _, lines = resolve(_config(), _split(12, [1], features=128))
    assert any(line.startswith("warning: every series is 1 step of 128 features")
               and "one row per step" in line for line in lines)
    for split in (_split(12, [1], features=3), _split(12, [128], features=128)):
        _, lines = resolve(_config(), split)
        assert not any(line.startswith("warning: every series is 1 step") for line in lines)
