"""The one shape every dataset takes on its way to the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.config import DataConfig, Task


@dataclass
class Split:
    X: np.ndarray  # (N, T, F) float32
    y: np.ndarray  # classification: (N,) int64 label indices; regression: (N, O) float32

    def __len__(self) -> int:
        return len(self.X)


@dataclass
class SequenceData:
    task: Task
    train: Split
    val: Split
    test: Split
    feature_names: list[str]
    label_names: list[str] = field(default_factory=list)  # classification only
    window_scaling: bool = False  # forecasting: inputs and outputs scaled by each window's mean level
    seasonal_period: int | None = None  # forecasting: for the seasonal-naive baseline
    test_naive: np.ndarray | None = None  # forecasting: seasonal-naive forecast per test window
    test_mase_scale: np.ndarray | None = None  # forecasting: in-sample seasonal MAE per test window
    source: str = ""
    sharded: bool = False  # data.stream under torchrun: train/val hold only this rank's series

    @property
    def output_size(self) -> int:
        return len(self.label_names) if self.task == "classification" else self.train.y.shape[1]

    @property
    def max_length(self) -> int:
        return max(split.X.shape[1] for split in (self.train, self.val, self.test))


def load_data(config: DataConfig) -> SequenceData:
    from training.data import builtin, files

    if config.dataset == "file":
        if not config.path:
            raise ValueError("data.path is required when data.dataset is 'file'")
        if config.stream:
            from training.data.stream import load_sharded
            from training.distributed import rank_and_world

            return load_sharded(config, *rank_and_world())
        return files.load_user_data(config)
    loader = builtin.BUILTIN.get(config.dataset)
    if loader is None:
        raise ValueError(
            f"unknown data.dataset {config.dataset!r}; use one of {sorted(builtin.BUILTIN)} or 'file'"
        )
    return loader(config)
