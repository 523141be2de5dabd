"""A short markdown model report: written into the run folder by training; export copies it into the
bundle folder with the export's own section (the service reads only manifest.json and model.onnx)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.data import SequenceData

REPORT_FILE = "report.md"


def write_run_report(run_dir: Path, config: TrainConfig, data: SequenceData, test: dict[str, Any],
                     plots: list[str]) -> Path:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda r: r["val_loss"])
    m, o = config.model, config.optim
    variant = "reset after the hidden matmul (torch.nn.GRU)" if m.reset == "after" else \
        "reset before the hidden matmul (the seed's GRU, Cho et al. 2014)"
    lines = [
        f"# Model report: {config.name}",
        "",
        f"- data: {data.source}; task {data.task}; {len(data.train)} train / {len(data.val)} validation / "
        f"{len(data.test)} test sequences of up to {data.max_length} steps, {len(data.feature_names)} "
        "feature(s)",
        f"- model: GRU, {m.num_layers} layer(s) × hidden {m.hidden_size}"
        f"{', bidirectional' if m.bidirectional else ''}, dropout {m.dropout}; {variant}",
        f"- training: {o.optimizer}, lr {o.learning_rate:g}, weight decay {o.weight_decay:g}, batch "
        f"{o.batch_size}, grad clip {o.grad_clip:g}, {o.precision} on {o.device}, seed {o.seed}; "
        f"{len(records)} epoch(s), best epoch {best['epoch']} (validation loss {best['val_loss']:.4f})",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in test.items() if not isinstance(v, dict)],
    ]
    baseline = test.get("seasonal_naive")
    if isinstance(baseline, dict):
        lines += ["", "Seasonal-naive baseline on the same test windows: "
                  + ", ".join(f"{k} {_fmt(v)}" for k, v in baseline.items())]
    if plots:
        lines += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots]]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
