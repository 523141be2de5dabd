"""Experiment tracking in the run folder: metrics.jsonl (one line per epoch), TensorBoard event files,
and at the end PNG plots and a markdown report; and on an MLflow server where one is configured
(training/mlflow_run.py). Only rank 0 tracks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from training.config import ResolvedConfig
from training.data import SequenceData
from training.mlflow_run import RUN_FILE, MlflowRun, configured


class Tracker:
    def __init__(self, run_dir: Path, config: ResolvedConfig, enabled: bool = True, keep_epochs: int = 0,
                 mlflow: bool = True):
        """keep_epochs: a resumed run keeps the first N lines of metrics.jsonl and appends after them.
        mlflow: log to the configured MLflow server, if any (not a search trial)."""
        self.run_dir, self.config, self.enabled, self.keep_epochs = run_dir, config, enabled, keep_epochs
        self.use_mlflow = mlflow
        self._log: Any = None
        self._board: Any = None
        self._mlflow: MlflowRun | None = None

    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        path = self.run_dir / "metrics.jsonl"
        kept = path.read_text().splitlines(keepends=True)[: self.keep_epochs] if self.keep_epochs else []
        self._log = open(path, "w")  # noqa: SIM115 - closed in __exit__
        self._log.writelines(kept)
        if self.config.optim.tensorboard:
            self._board = _summary_writer(self.run_dir / "tensorboard")
        if not self.keep_epochs:  # a new run: not the MLflow run of an earlier one in this folder
            (self.run_dir / RUN_FILE).unlink(missing_ok=True)
        if self.use_mlflow and configured():
            self._mlflow = MlflowRun.start(self.run_dir, self.config, resume=self.keep_epochs > 0)
        return self

    def log(self, record: dict[str, Any]) -> None:
        if self._log is None:
            return
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        if self._board is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float):
                    group = "loss" if key.endswith("loss") else "metrics"
                    self._board.add_scalar(f"{group}/{key}", value, record["epoch"])
            self._board.flush()
        if self._mlflow is not None:
            self._mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, record["epoch"])

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._log is not None:
            self._log.close()
        if self._board is not None:
            self._board.close()
        if self._mlflow is not None and kind is not None:  # a finished run is closed by finish_run
            self._mlflow.fail()


def _summary_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises this when the tensorboard package is missing
        warnings.warn("optim.tensorboard is on but the tensorboard package is not installed; "
                      "pip install tensorboard (or set optim.tensorboard=false)", stacklevel=3)
        return None
    return SummaryWriter(log_dir=str(folder))


def finish_run(run_dir: Path, data: SequenceData, config: ResolvedConfig,
               test: dict[str, Any], predicted: np.ndarray, diagnosis: list[str] | None = None) -> None:
    """After the best checkpoint is evaluated (`predicted`: its test answers): plots (if on) and
    report.md."""
    from training.report import write_run_report

    plots: list[str] = []
    if config.optim.plots:
        from training.plots import write_plots

        plots = write_plots(run_dir, data, predicted)
    report = write_run_report(run_dir, config, data, test, plots, diagnosis or [])
    tracked = MlflowRun.of(run_dir)
    if tracked is not None:
        files = [report, run_dir / "config.yaml", run_dir / "metrics.jsonl", *(run_dir / p for p in plots)]
        tracked.finish(test, files, step=len((run_dir / "metrics.jsonl").read_text().splitlines()))
