"""The model report beside a bundle: the run folder's report.md (training/report.py) and its plots, plus
what export verified. Files only for people: the service reads manifest.json and model.onnx alone."""

from __future__ import annotations

from pathlib import Path

from service.bundle import Manifest

REPORT_FILE = "report.md"


def write_bundle_report(run_dir: Path, manifest: Manifest, reference_diff: float) -> dict[str, bytes]:
    """The files to add to the bundle folder: report.md and the PNGs it shows (when the run has them)."""
    run_report = run_dir / REPORT_FILE
    text = run_report.read_text() if run_report.exists() else f"# Model report: {manifest.name}\n"
    variant = "torch.nn.GRU (reset after)" if manifest.gru.linear_before_reset else "seed GRU (reset before)"
    text += "\n".join([
        "",
        f"## Export: {manifest.name} version {manifest.version}",
        "",
        f"- ONNX opset {manifest.onnx.opset}; GRU nodes with linear_before_reset="
        f"{manifest.gru.linear_before_reset} ({variant})",
        f"- onnxruntime vs PyTorch over (batch, length) cases {manifest.parity.cases}, each also ragged: "
        f"nearest its tolerance: {manifest.parity.worst_case}, difference {manifest.parity.max_abs_diff:.2e} "
        f"(tolerance {manifest.parity.tolerance:.2e}: grows with sqrt(length) and the output's scale)"
        + (" — OVER THE TOLERANCE, written with --accept-parity-error" if manifest.parity.accepted_failure
           else ""),
        f"- the GRU state vs the NumPy GRU equations (float64): max abs diff {reference_diff:.2e}",
        f"- accepted lengths 1..{manifest.inputs.max_length}; checkpoint sha256 "
        f"{manifest.checkpoint_sha256[:16]}…",
        "",
    ])
    files = {REPORT_FILE: text.encode()}
    for png in sorted(run_dir.glob("*.png")):
        files[png.name] = png.read_bytes()
    return files
