"""Candidate activations other than tanh: onnxruntime's CPU GRU kernel runs each one the project offers
(against the NumPy equations), and a trained ReLU-candidate model exports with the matching `activations`
on every GRU node, passes parity against PyTorch and the NumPy reference, streams, and is refused by the
service when its manifest says another activation. A comparison-only LSTM checkpoint is refused by export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.bundle import export_checkpoint
from export.verify import TOLERANCE
from service.batching import compute_now
from service.bundle import ONNX_ACTIVATIONS, BundleError
from service.graph_check import load_bundle
from service.runtime import ModelRuntime
from service.settings import Settings
from tests.export.foreign_graphs import reference, single_gru
from tests.helpers import train_tiny


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("activation", sorted(ONNX_ACTIVATIONS))
def test_onnxruntime_cpu_runs_every_offered_candidate_activation(activation: str, lbr: int,
                                                                 bidirectional: bool) -> None:
    model, params = single_gru(3, 5, lbr, ONNX_ACTIVATIONS[activation], bidirectional)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    x = (2 * rng.standard_normal((11, 4, 3))).astype(np.float32)
    h0 = rng.standard_normal((2 if bidirectional else 1, 4, 5)).astype(np.float32)
    y, y_h = session.run(None, {"X": x, "initial_h": h0})
    ref_y, ref_h = reference(x, params, h0, lbr, activation, bidirectional)
    assert np.abs(y - ref_y).max() < 1e-5 and np.abs(y_h - ref_h).max() < 1e-5
    if activation != "tanh":  # onnxruntime applies it (it would not be the tanh GRU's answer)
        _, tanh_h = reference(x, params, h0, lbr, "tanh", bidirectional)
        assert np.abs(y_h - tanh_h).max() > 1e-3


@pytest.fixture(scope="module", params=["after", "before"])
def relu_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp(f"relu_{request.param}")
    run = train_tiny(root / "runs", "relu", "model.activation=relu", f"model.reset={request.param}",
                     "model.num_layers=2", "optim.max_epochs=3")
    return request.param, export_checkpoint(run.checkpoint, root / "models", "relu")


def test_relu_export_sets_the_activations_on_every_gru_node_and_passes_parity(relu_bundle) -> None:
    reset, result = relu_bundle
    graph = onnx.load(str(result.bundle_dir / "model.onnx"))
    grus = [n for n in graph.graph.node if n.op_type == "GRU"]
    assert len(grus) == 2
    for node in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["activations"] == [b"Sigmoid", b"Relu"]
        assert attrs["linear_before_reset"] == (1 if reset == "after" else 0)
    assert result.manifest.gru.activation == "relu"
    assert result.manifest.parity.max_abs_diff <= TOLERANCE  # onnxruntime vs the PyTorch loop GRU
    assert result.reference.max_abs_diff <= TOLERANCE  # the state's h vs the NumPy ReLU equations


def test_relu_bundle_streams_chunk_by_chunk_as_whole(relu_bundle) -> None:
    _, result = relu_bundle
    runtime = ModelRuntime(result.bundle_dir, Settings())
    runtime.load()
    assert result.manifest.streaming.supported
    sequence = np.random.default_rng(0).normal(size=(30, 1)).astype(np.float32)
    whole = runtime.predict(sequence[None])[0]
    state = None
    for chunk in (sequence[:7], sequence[7:8], sequence[8:]):
        result = compute_now(runtime, [chunk], None if state is None else state[None])
        answer, state = result.outputs[0], result.states[0]
    assert np.abs(answer - whole).max() <= 1e-5


def test_service_refuses_a_manifest_whose_activation_is_not_the_graphs(relu_bundle, tmp_path: Path) -> None:
    _, result = relu_bundle
    copy = tmp_path / "relu" / str(result.manifest.version)
    shutil.copytree(result.bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["gru"]["activation"] = "tanh"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"gru.activation says \['sigmoid', 'tanh'\] but GRU node .* "
                                          r"has \['sigmoid', 'relu'\]"):
        load_bundle(copy)


def test_an_lstm_checkpoint_is_refused_by_export_with_the_reason(tmp_path: Path) -> None:
    run = train_tiny(tmp_path / "runs", "lstm", "model.cell=lstm", "optim.max_epochs=1")
    with pytest.raises(ValueError, match=r"holds an LSTM \(model.cell=lstm\).*train with model.cell=gru"):
        export_checkpoint(run.checkpoint, tmp_path / "models", "lstm")
    assert not (tmp_path / "models").exists()


def test_the_activation_names_agree_from_config_to_manifest() -> None:
    from typing import get_args

    from training.cells import CANDIDATES
    from training.config import ModelConfig
    from training.reference import ACTIVATIONS

    offered = set(get_args(ModelConfig.model_fields["activation"].annotation))
    assert offered == set(CANDIDATES) == set(ACTIVATIONS) == set(ONNX_ACTIVATIONS)
