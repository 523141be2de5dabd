"""A short markdown model report: written into the run folder by training; export copies it into the
bundle folder with the export's own section (the service reads only manifest.json and model.onnx)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.baselines import OMITTED
from training.config import ResolvedConfig
from training.data import SequenceData
from training.defaults import augmentation

REPORT_FILE = "report.md"


def write_run_report(run_dir: Path, config: ResolvedConfig, data: SequenceData, test: dict[str, Any],
                     plots: list[str], diagnosis: list[str] | None = None) -> Path:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    validated = "val_loss" in records[0]
    best = min(records, key=lambda r: r["val_loss"]) if validated else records[-1]
    kept = (f"best epoch {best['epoch']} (validation loss {best['val_loss']:.4f})" if validated else
            f"final fit on the training and validation series, last epoch {best['epoch']} kept")
    m, o = config.model, config.optim
    variant = "reset after the hidden matmul (torch.nn.GRU)" if m.reset == "after" else \
        "reset before the hidden matmul (the seed's GRU, Cho et al. 2014)"
    lines = [
        f"# Model report: {config.name}",
        "",
        f"- data: {data.source}; task {data.task}; {_split_sizes(data, o.final_fit is True)} / "
        f"{len(data.test)} test sequences of up to {data.max_length} steps, {len(data.feature_names)} "
        "feature(s)",
        f"- model: front end {m.frontend}, {m.patch} step(s) per GRU step, GRU {m.num_layers} layer(s) × "
        f"hidden {m.hidden_size}"
        f"{', bidirectional' if m.bidirectional else ''}, dropout {m.dropout}; readout "
        f"{' ⊕ '.join(m.readout)}; {variant}",
        f"- training: {o.optimizer}, {o.schedule} lr {o.learning_rate:g}, weight decay {o.weight_decay:g}, "
        f"batch {o.batch_size}, grad clip {o.grad_clip:g}, {augmentation(config)}, "
        f"{o.precision} on {o.device}, seed {o.seed}; {len(records)} epoch(s), {kept}",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in test.items()
          if not isinstance(v, dict | list) and k not in OMITTED],
    ]
    lines += _baselines(test) + _members(test, m.hidden_size)
    lines += ["", "## Diagnosis", "", *([f"- {d}" for d in diagnosis] if diagnosis else
                                        ["- neither underfits nor memorises (training/diagnose.py)"])]
    if plots:
        lines += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots]]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _baselines(test: dict[str, Any]) -> list[str]:
    """The model beside its baselines on the same test data (training/baselines.py), and the verdict."""
    baselines, versus = test.get("baselines"), test.get("versus_baselines")
    if not (baselines and versus):
        return []
    columns = [c for c in ("mase", "rmse", "mae", "mape", "macro_f1", "accuracy") if c in test]
    rows = {"**GRU (this model)**": test} | baselines
    verdict = "beats" if versus["beaten"] else "does NOT beat"
    lines = ["", "## Baselines (same test data, same run)", "",
             "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns),
             *[f"| {name} | " + " | ".join(_fmt(row.get(c, "–")) for c in columns) + " |"
               for name, row in rows.items()],
             "", f"The model {verdict} the best baseline ({versus['best_baseline']}, {versus['metric']} "
             f"{_fmt(versus['best_baseline_value'])} vs {_fmt(versus['model'])}{_on(versus)})."]
    sampled = [name for name, row in baselines.items() if "windows" in row]
    if sampled:
        lines.append(f"{' and '.join(sampled)}: fitted at {baselines[sampled[0]]['windows']} evenly spaced "
                     "test windows (a fit takes ~50 ms); the model is compared with them on those windows.")
    for metric, some in (("mape", "series"), ("mase", "windows")):
        omitted = test.get(f"{metric}_omitted")
        if omitted:
            said = f"leaves some {some} out" if metric in test else "is not reported"
            lines.append(f"{metric.upper()} {said}: {omitted}.")
    return lines


def _on(versus: dict[str, Any]) -> str:
    return f", both on its {versus['windows']} windows" if "windows" in versus else ""


def _members(test: dict[str, Any], hidden: int) -> list[str]:
    """An ensemble (optim.members): each member's test figures beside the merged model's."""
    members = test.get("members")
    if not members:
        return []
    columns = [c for c in ("accuracy", "mase", "rmse", "mae") if c in test]
    rows = {"**merged (this model)**": test} | {f"member {i} (seed + {i})": row for i, row in members.items()}
    return ["", f"## Ensemble: {len(members)} members, merged into one GRU of hidden {hidden} "
            "(training/ensemble.py)", "", "| model | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
            *[f"| {name} | " + " | ".join(_fmt(row.get(c, "–")) for c in columns) + " |"
              for name, row in rows.items()]]


def _split_sizes(data: SequenceData, final_fit: bool) -> str:
    if final_fit:
        return f"{len(data.train) + len(data.val)} train (the validation split included)"
    return f"{len(data.train)} train / {len(data.val)} validation"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
