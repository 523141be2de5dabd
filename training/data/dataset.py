"""The one shape every dataset takes on its way to the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.heads import Task, head_for
from training.config import DataConfig

PAD_LABEL = -100  # tagging: label of padded steps (ignored by the loss and the metrics)


@dataclass
class Split:
    X: np.ndarray  # (N, T, F) float32, zero-padded after each sequence's length
    y: np.ndarray  # classification: (N,) int64; regression: (N, O) float32; tagging: (N, T) int64
    lengths: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # (N,) valid steps

    def __post_init__(self) -> None:
        if self.lengths.size == 0:  # not given: every sequence has all T steps
            self.lengths = np.full(len(self.X), self.X.shape[1], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.X)

    @property
    def ragged(self) -> bool:
        return bool(len(self.X)) and int(np.min(self.lengths)) < self.X.shape[1]

    def subset(self, index: np.ndarray) -> Split:
        return Split(self.X[index], self.y[index], self.lengths[index])


@dataclass
class Recordings:
    """Tagging split in time (training/data/recordings.py): the recordings, labels encoded, and where each
    one's validation and test parts begin; kept so that windows of another length can be cut."""

    series: Split
    cuts: np.ndarray  # (N,) each recording's first validation step
    ends: np.ndarray  # (N,) its first test step (its length, with a test file)


def pad_sequences(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged (T_i, F) arrays -> zero-padded (N, max T, F) float32 and (N,) int64 lengths."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    X = np.zeros((len(sequences), int(lengths.max()), sequences[0].shape[1]), dtype=np.float32)
    for i, seq in enumerate(sequences):
        X[i, : len(seq)] = seq
    return X, lengths


@dataclass
class SequenceData:
    task: Task
    train: Split
    val: Split
    test: Split
    feature_names: list[str]
    label_names: list[str] = field(default_factory=list)  # classification and tagging
    window_scaling: bool = False  # forecasting: inputs and outputs scaled by each window's mean level
    seasonal_period: int | None = None  # forecasting: for the seasonal-naive baseline
    test_naive: np.ndarray | None = None  # forecasting: seasonal-naive forecast per test window
    test_mase_scale: np.ndarray | None = None  # forecasting: in-sample seasonal MAE per test window
    test_history: list[np.ndarray] | None = None  # forecasting: the target before each test window
    test_series: np.ndarray | None = None  # forecasting: each test window's series (MAPE is per series)
    notes: list[str] = field(default_factory=list)  # what loading chose from the data (printed by gru train)
    source: str = ""
    sharded: bool = False  # data.sharded under torchrun: train/val hold only this rank's series
    baseline_forecasts: dict[str, np.ndarray] | None = None  # forecasts and regression: made once per run
    recordings: Recordings | None = None  # tagging split in time: train and val are windows cut from these

    @property
    def output_size(self) -> int:
        return self.train.y.shape[1] if head_for(self.task).values else len(self.label_names)

    @property
    def max_length(self) -> int:
        return max(split.X.shape[1] for split in (self.train, self.val, self.test))


def load_data(config: DataConfig) -> SequenceData:
    from training.data import builtin, files

    if config.dataset == "file":
        if not config.path:
            raise ValueError("data.path is required when data.dataset is 'file'")
        if config.sharded:
            from training.data.shards import load_sharded
            from training.distributed import rank_and_world

            return load_sharded(config, *rank_and_world())
        return files.load_user_data(config)
    loader = builtin.BUILTIN.get(config.dataset)
    if loader is None:
        raise ValueError(
            f"unknown data.dataset {config.dataset!r}; use one of {sorted(builtin.BUILTIN)} or 'file'"
        )
    return loader(config)
