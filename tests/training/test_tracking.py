"""Tracking in the run folder: TensorBoard events, PNG plots, the markdown report; device and precision."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import train_tiny

PNG = b"\x89PNG\r\n\x1a\n"


def test_classification_run_has_tensorboard_scalars_plots_and_report(italy_run) -> None:
    events = EventAccumulator(str(italy_run.run_dir / "tensorboard"))
    events.Reload()
    epochs = len((italy_run.run_dir / "metrics.jsonl").read_text().splitlines())
    assert len(events.Scalars("loss/train_loss")) == epochs  # final fit: no validation split
    for name in ("learning_curves.png", "confusion_matrix.png"):
        assert (italy_run.run_dir / name).read_bytes()[:8] == PNG
    report = (italy_run.run_dir / "report.md").read_text()
    assert f"| accuracy | {italy_run.test_metrics['accuracy']:.4f} |" in report


def test_forecast_run_plots_forecast_against_actual(airline_run) -> None:
    assert (airline_run.run_dir / "forecast.png").read_bytes()[:8] == PNG
    report = (airline_run.run_dir / "report.md").read_text()
    assert "## Baselines (same test data, same run)" in report and "| seasonal_naive |" in report


def test_bf16_autocast_trains_on_cpu_and_exports_in_fp32_within_parity(tmp_path: Path) -> None:
    from export.bundle import export_checkpoint

    run = train_tiny(tmp_path / "runs", "bf16", "optim.precision=bf16", "optim.max_epochs=3")
    assert run.test_metrics["accuracy"] > 0.5
    result = export_checkpoint(run.checkpoint, tmp_path / "models", "bf16")
    assert result.manifest.parity.max_abs_diff <= 1e-5


def test_cuda_without_a_gpu_and_unknown_precision_are_refused_by_name(tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="optim.device is 'cuda'"):
            train_tiny(tmp_path, "cuda", "optim.device=cuda")
    with pytest.raises(ValueError, match="optim.precision"):
        train_tiny(tmp_path, "p", "optim.precision=int8", "optim.max_epochs=1")
