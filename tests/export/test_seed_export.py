"""The seed's GRU end to end: trained, exported with linear_before_reset=0, verified against PyTorch
and the NumPy equations, loaded by the service (on the CPU provider), report beside the bundle."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.bundle import export_checkpoint
from export.onnx import example_inputs
from service.batching import compute_now
from service.graph_check import load_bundle
from service.runtime import ModelRuntime
from service.settings import Settings
from tests.helpers import train_tiny
from training.checkpoint import Checkpoint
from training.reference import gru_forward


@pytest.fixture(scope="module")
def seed_bundle(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("seed")
    run = train_tiny(root / "runs", "seed", "model.reset=before", "model.num_layers=2",
                     "model.bidirectional=true", "optim.max_epochs=3")
    return run, export_checkpoint(run.checkpoint, root / "models", "seed")


def test_seed_export_sets_linear_before_reset_0_and_passes_parity(seed_bundle) -> None:
    _, result = seed_bundle
    graph = onnx.load(str(result.bundle_dir / "model.onnx"))
    grus = [n for n in graph.graph.node if n.op_type == "GRU"]
    assert len(grus) == 4  # 2 layers x 2 directions, one forward node each
    for node in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == 0
    assert result.manifest.gru.linear_before_reset == 0
    assert result.manifest.parity.max_abs_diff <= 1e-5  # onnxruntime vs the PyTorch seed model
    assert result.reference.max_abs_diff <= 1e-5  # h_n vs the NumPy reset-before equations


def test_seed_graph_matches_numpy_and_not_the_reset_after_equations(seed_bundle) -> None:
    run, result = seed_bundle
    model = Checkpoint.load(run.checkpoint).model()
    x, state, lengths = example_inputs(model, 3, 40)
    session = ort.InferenceSession(str(result.bundle_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    packed = session.run(["next_state"], {"x": x.numpy(), "state": state.numpy(),
                                          "lengths": lengths.numpy()})[0]
    h_n = packed.reshape(3, 4, -1).transpose(1, 0, 2)  # (L*D, B, H)
    h0 = state.reshape(3, 4, -1).transpose(0, 1).double().numpy()
    gru_in = model.gru_inputs(x).detach().double().numpy()  # what the front end feeds the GRU
    params = {k: v.detach().double().numpy() for k, v in model.gru_weights().items()}
    _, before = gru_forward(gru_in, params, 2, True, h0, reset="before")
    _, after = gru_forward(gru_in, params, 2, True, h0, reset="after")
    assert np.abs(h_n - before).max() < 1e-5
    assert np.abs(h_n - after).max() > 1e-3


def test_service_loads_the_seed_bundle_and_ignores_the_report_files(seed_bundle) -> None:
    _, result = seed_bundle
    files = {p.name for p in result.bundle_dir.iterdir()}
    expected = {"model.onnx", "manifest.json", "report.md", "learning_curves.png", "confusion_matrix.png"}
    assert expected <= files
    report = (result.bundle_dir / "report.md").read_text()
    assert "linear_before_reset=0" in report and "reset before" in report
    load_bundle(result.bundle_dir)  # cross-checks manifest and graph; extra files do not matter
    runtime = ModelRuntime(result.bundle_dir, Settings())
    runtime.load()
    assert runtime.provider == "CPUExecutionProvider"
    probs = runtime.predict(np.random.default_rng(0).normal(size=(2, 24, 1)).astype(np.float32))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_seed_graph_with_ragged_lengths_equals_each_sequence_alone(seed_bundle) -> None:
    """A linear_before_reset=0 graph: a padded batch answers each sequence as alone."""
    _, result = seed_bundle
    runtime = ModelRuntime(result.bundle_dir, Settings())
    runtime.load()
    rng = np.random.default_rng(3)
    sequences = [rng.normal(size=(n, 1)).astype(np.float32) for n in (24, 5, 17, 1)]
    together = compute_now(runtime, sequences).outputs
    alone = np.concatenate([runtime.predict(seq[None]) for seq in sequences])
    assert np.abs(together - alone).max() <= 1e-5
