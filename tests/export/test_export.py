"""Export parity: uni/bidirectional x 1-3 layers, at batch sizes and lengths other than the traced ones,
against PyTorch and against the NumPy reference; and nothing is written when verification fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export.bundle
from export.bundle import export_checkpoint
from export.onnx import example_state
from export.verify import TOLERANCE, VerificationError
from service.graph_check import load_bundle
from tests.helpers import train_tiny
from training.checkpoint import Checkpoint
from training.reference import gru_forward


def _session(bundle_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])


def _full(x: np.ndarray) -> np.ndarray:
    return np.full(x.shape[0], x.shape[1], dtype=np.int32)  # no padding: every step is valid


@pytest.mark.parametrize("patch", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_parity_matrix(tmp_path: Path, layers: int, bidirectional: bool, patch: int) -> None:
    run = train_tiny(tmp_path, "m", "optim.max_epochs=1", f"model.num_layers={layers}",
                     f"model.bidirectional={str(bidirectional).lower()}", "model.dropout=0.2",
                     f"model.patch={patch}")
    result = export_checkpoint(run.checkpoint, tmp_path / "models", "m")
    manifest = result.manifest
    assert manifest.parity.max_abs_diff <= TOLERANCE
    assert (2, 24) not in manifest.parity.cases and (1, 51) in manifest.parity.cases  # traced (2, 24)
    graph = onnx.load(result.bundle_dir / "model.onnx")
    grus = [n for n in graph.graph.node if n.op_type == "GRU"]
    assert len(grus) == layers * (2 if bidirectional else 1)  # one forward node per layer and direction
    assert all(onnx.helper.get_attribute_value(a) == 1
               for n in grus for a in n.attribute if a.name == "linear_before_reset")
    model = Checkpoint.load(run.checkpoint).model()
    session = _session(result.bundle_dir)
    for batch, length in [(1, 1), (4, 37), (9, 100)]:  # more shapes, beyond the export's own checks
        x = np.random.default_rng(length).normal(size=(batch, length, 1)).astype(np.float32)
        state = example_state(model, batch, torch.Generator().manual_seed(batch))
        lengths = np.random.default_rng(batch).integers(1, length + 1, batch).astype(np.int32)
        x *= np.arange(length)[None, :, None] < lengths[:, None, None]
        out, next_state = session.run(None, {"x": x, "state": state.numpy(), "lengths": lengths})
        with torch.no_grad():
            ref_out, ref_state = model.predict(torch.as_tensor(x), torch.as_tensor(lengths), state)
        assert np.abs(out - ref_out.numpy()).max() <= TOLERANCE
        assert np.abs(next_state - ref_state.numpy()).max() <= TOLERANCE


@pytest.mark.parametrize("patch", [1, 4])
def test_graph_state_matches_the_numpy_oracle(tmp_path: Path, patch: int) -> None:
    run = train_tiny(tmp_path, "m", "optim.max_epochs=1", "model.num_layers=2", "model.bidirectional=true",
                     f"model.patch={patch}")
    bundle_dir = export_checkpoint(run.checkpoint, tmp_path / "models", "m").bundle_dir
    model = Checkpoint.load(run.checkpoint).model()
    x = np.random.default_rng(0).normal(size=(3, 30, 1)).astype(np.float32)
    h0 = np.random.default_rng(1).normal(size=(4, 3, 16)).astype(np.float32)
    packed = np.ascontiguousarray(h0.transpose(1, 0, 2).reshape(3, -1))
    _, state = _session(bundle_dir).run(None, {"x": x, "state": packed, "lengths": _full(x)})
    with torch.no_grad():
        gru_input = model.gru_inputs(torch.as_tensor(x)).double().numpy()  # the front end's patches
    params = {k: v.detach().double().numpy() for k, v in model.gru_weights().items()}
    _, ref_h = gru_forward(gru_input, params, 2, True, h0, reset="after")
    assert np.abs(state - ref_h.transpose(1, 0, 2).reshape(3, -1)).max() <= TOLERANCE


def test_forecast_bundle_answers_in_original_units(airline_run, tmp_path: Path) -> None:
    result = export_checkpoint(airline_run.checkpoint, tmp_path / "models", "airline")
    manifest = json.loads((result.bundle_dir / "manifest.json").read_text())
    assert manifest["task"] == "forecast" and manifest["output"]["size"] == 12
    assert manifest["normalization"]["window_scaling"] is True
    x = np.linspace(300, 450, 24, dtype=np.float32).reshape(1, 24, 1)
    state = np.zeros((1, result.manifest.state.size), np.float32)
    out, _ = _session(result.bundle_dir).run(None, {"x": x, "state": state, "lengths": _full(x)})
    assert 100 < out.mean() < 1000  # passengers, not z-scores


def test_bundle_is_versioned_and_refuses_to_overwrite(italy_run, tmp_path: Path) -> None:
    first = export_checkpoint(italy_run.checkpoint, tmp_path / "models", "italy")
    second = export_checkpoint(italy_run.checkpoint, tmp_path / "models", "italy")
    assert (first.bundle_dir.name, second.bundle_dir.name) == ("1", "2")
    with pytest.raises(FileExistsError, match="already exists"):
        export_checkpoint(italy_run.checkpoint, tmp_path / "models", "italy", version=1)
    manifest, _ = load_bundle(second.bundle_dir)  # what the service will load
    assert manifest.checkpoint_sha256 and manifest.training.test_metrics["accuracy"] > 0.5


def _flip_linear_before_reset(graph: bytes) -> bytes:
    model = onnx.load_from_string(graph)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "linear_before_reset":
                attr.i = 0
    return model.SerializeToString()


def test_wrong_gru_variant_is_refused_and_nothing_is_written(italy_run, tmp_path, monkeypatch) -> None:
    """Fault injection: the exporter drops linear_before_reset (as onnxscript < 0.7.1 did)."""
    real = export.bundle.to_onnx
    monkeypatch.setattr(export.bundle, "to_onnx", lambda *a, **k: _flip_linear_before_reset(real(*a, **k)))
    with pytest.raises(VerificationError, match="linear_before_reset"):
        export_checkpoint(italy_run.checkpoint, tmp_path / "models", "italy")
    assert not (tmp_path / "models" / "italy").exists() or not any((tmp_path / "models" / "italy").iterdir())


def test_numeric_mismatch_is_refused_with_the_case_named(italy_run, tmp_path, monkeypatch) -> None:
    """Fault injection: a graph whose weights differ from the checkpoint's passes the structure checks
    and must be caught by the onnxruntime-vs-PyTorch parity check."""
    real = export.bundle.to_onnx

    def perturbed(*args, **kwargs) -> bytes:
        model = onnx.load_from_string(real(*args, **kwargs))
        weight = next(t for t in model.graph.initializer if t.dims and len(t.dims) == 3)
        values = onnx.numpy_helper.to_array(weight) + 0.01
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        return model.SerializeToString()

    monkeypatch.setattr(export.bundle, "to_onnx", perturbed)
    with pytest.raises(VerificationError, match=r"differs from PyTorch by .* at batch=\d+, length=\d+"):
        export_checkpoint(italy_run.checkpoint, tmp_path / "models", "italy")
    assert not any((tmp_path / "models").rglob("manifest.json"))


def test_export_takes_the_repository_as_gru_serve_spells_it_too() -> None:
    """`gru serve --models DIR`, `gru export --repository DIR`: before, `gru export --models` was refused."""
    import argparse

    from export.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for flag in ("--models", "--repository"):
        args = parser.parse_args(["--checkpoint", "c.pt", flag, "elsewhere", "--name", "m"])
        assert args.repository == "elsewhere"
