"""The parity tolerance (export/verify.py): derived from float32 arithmetic, growing with sqrt(length) and
the output's scale; a failure is one `error:` line naming output, case, difference and tolerance (exit 2,
no traceback); --accept-parity-error writes the bundle and the manifest says so. And a tiny export matrix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest

import export.bundle
import gru_cli
from bench import export_matrix
from export.verify import EPS32, PARITY_C, ParityReport, _case, parity_tolerance


def test_the_tolerance_grows_with_sqrt_length_and_the_output_scale() -> None:
    assert parity_tolerance(1, 0.3) == pytest.approx(PARITY_C * EPS32)  # probabilities: scale 1
    assert parity_tolerance(100, 1.0) == pytest.approx(10 * parity_tolerance(1, 1.0))
    assert parity_tolerance(4, 500.0) == pytest.approx(2 * 500 * parity_tolerance(1, 1.0))
    assert parity_tolerance(51, 1.0) < 1e-3  # far below what a real export bug gives (>= 1e-3)
    assert parity_tolerance(51, 1.0) > 1.6e-5  # above what 400-epoch Airline models measured


def test_a_nan_on_either_side_fails_parity() -> None:
    ok = _case("output", 2, 4, False, np.ones(3, np.float32), np.ones(3))
    nan = _case("output", 2, 4, True, np.array([1, np.nan, 1], np.float32), np.ones(3))
    report = ParityReport("PyTorch", [(2, 4)], [ok, nan])
    assert ok.ratio == 0 and not report.passed and report.worst is nan


@pytest.fixture
def perturbed_graph(monkeypatch) -> None:
    """Fault injection: every recurrent weight of the graph off by 1e-3, as a subtle export bug would be."""
    real = export.bundle.to_onnx

    def perturbed(*args, **kwargs) -> bytes:
        model = onnx.load_from_string(real(*args, **kwargs))
        weight = next(t for t in model.graph.initializer if t.dims and len(t.dims) == 3)
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) + 1e-3, weight.name))
        return model.SerializeToString()

    monkeypatch.setattr(export.bundle, "to_onnx", perturbed)


def test_a_parity_failure_is_one_error_line_and_exit_2(italy_run, tmp_path: Path, perturbed_graph,
                                                       capsys) -> None:
    argv = ["export", "--checkpoint", str(italy_run.checkpoint), "--repository", str(tmp_path), "--name", "m"]
    assert gru_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("gru export: error: output '")
    assert "differs from PyTorch by" in err and "at batch=" in err and "length=" in err
    assert "over the tolerance" in err and "--accept-parity-error" in err
    assert not list(tmp_path.rglob("manifest.json"))


def test_accept_parity_error_writes_the_bundle_and_records_it(italy_run, tmp_path: Path, perturbed_graph,
                                                               capsys) -> None:
    argv = ["export", "--checkpoint", str(italy_run.checkpoint), "--repository", str(tmp_path), "--name", "m",
            "--accept-parity-error"]
    assert gru_cli.main(argv) == 0
    assert "written anyway" in capsys.readouterr().out
    parity = json.loads((tmp_path / "m" / "1" / "manifest.json").read_text())["parity"]
    assert parity["accepted_failure"] is True and parity["max_abs_diff"] > parity["tolerance"]
    assert parity["worst_case"].startswith("output '") and "batch=" in parity["worst_case"]
    assert "OVER THE TOLERANCE" in (tmp_path / "m" / "1" / "report.md").read_text()


def test_a_clean_export_records_the_case_nearest_its_tolerance(italy_run, tmp_path: Path) -> None:
    result = export.bundle.export_checkpoint(italy_run.checkpoint, tmp_path, "m")
    parity = result.manifest.parity
    assert not parity.accepted_failure and 0 < parity.max_abs_diff <= parity.tolerance
    worst = max([result.parity, result.reference], key=lambda r: r.worst.ratio).worst
    assert parity.tolerance == parity_tolerance(worst.length, worst.scale)
    assert math.isclose(parity.max_abs_diff, worst.diff)


def test_a_tiny_export_matrix_exports_every_cell(tmp_path: Path, capsys) -> None:
    argv = ["--datasets", "ItalyPowerDemand", "--epochs", "2", "--layers", "1", "--directions", "bi",
            "--set", "model.hidden_size=8", "--out", str(tmp_path), "--sweep", "1,16", "--draws", "1"]
    assert export_matrix.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 of 4 exports passed" in out
    for reset in ("after", "before"):
        assert f"| ItalyPowerDemand-bi-L1-{reset}-e2 | 2 | best (epoch " in out
        assert f"| ItalyPowerDemand-bi-L1-{reset}-e2 | 2 | final (epoch 2) | yes |" in out
    assert "How the difference grows with length (4 exports x 1 batches" in out and "\n| 16 | " in out
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all(r["exported"] and r["epochs_run"] == 2 and 0 < r["ratio"] <= 1 for r in rows)
