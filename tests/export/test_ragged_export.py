"""Exported graphs answer a padded batch of mixed lengths exactly as each sequence alone (onnxruntime),
for uni- and bidirectional stacks, a patching front end and pooled readouts, and as PyTorch does."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from export.verify import TOLERANCE
from service.batching import compute_now, pad_batch
from service.bundle import BundleError
from service.graph_check import load_bundle
from service.runtime import ModelRuntime
from service.settings import Settings
from training.checkpoint import Checkpoint


def _runtime(repository: Path, name: str) -> ModelRuntime:
    runtime = ModelRuntime(repository / name / "1", Settings())
    runtime.load()
    return runtime


@pytest.fixture(scope="module")
def runtimes(ragged_repository: Path) -> dict[str, ModelRuntime]:
    return {name: _runtime(ragged_repository, name) for name in ("vowels_uni", "vowels_bi", "regimes")}


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=2, max_size=8),
       name=st.sampled_from(["vowels_uni", "vowels_bi", "regimes"]), seed=st.integers(0, 2**16))
def test_mixed_lengths_in_one_run_equal_each_sequence_alone(runtimes, lengths, name, seed) -> None:
    runtime = runtimes[name]
    features = runtime.manifest.inputs.num_features
    rng = np.random.default_rng(seed)
    sequences = [rng.normal(size=(n, features)).astype(np.float32) for n in lengths]
    together = compute_now(runtime, sequences).outputs
    for i, seq in enumerate(sequences):
        alone = runtime.predict(seq[None])[0]
        assert np.abs(together[i] - alone).max() <= TOLERANCE


@pytest.mark.parametrize("run_name", ["vowels_uni_run", "vowels_bi_run", "regimes_run"])
def test_padded_graph_matches_pytorch_packed(request, runtimes, run_name: str) -> None:
    run = request.getfixturevalue(run_name)
    runtime = runtimes[run_name.removesuffix("_run")]
    model = Checkpoint.load(run.checkpoint).model()
    rng = np.random.default_rng(0)
    sequences = [rng.normal(size=(n, model.config.input_size)).astype(np.float32) for n in (29, 7, 1, 16)]
    x, lengths = pad_batch(sequences)
    state = rng.normal(size=(len(sequences), runtime.manifest.state.size)).astype(np.float32)
    got, got_state = runtime.run(x, lengths, state)
    with torch.no_grad():
        ref, ref_state = model.graph(torch.as_tensor(x), torch.as_tensor(state), torch.as_tensor(lengths))
    assert np.abs(got - ref.numpy()).max() <= TOLERANCE
    assert np.abs(got_state - ref_state.numpy()).max() <= TOLERANCE


def test_a_graph_that_ignores_lengths_is_refused(ragged_repository: Path, tmp_path: Path) -> None:
    """A graph with a `lengths` input that no node reads would let padding into the answers."""
    bundle = tmp_path / "vowels_bi" / "1"
    shutil.copytree(ragged_repository / "vowels_bi" / "1", bundle)
    graph = onnx.load(bundle / "model.onnx")
    _answer_at_full_length(graph)
    _rewrite(bundle, graph, drop_lengths=False)
    with pytest.raises(BundleError, match="no node of the graph reads it"):
        load_bundle(bundle)


def _answer_at_full_length(graph: onnx.ModelProto) -> None:
    """Rewire every reader of `lengths` to every sequence's full length, computed from x's shape."""
    nodes = [
        onnx.helper.make_node("Shape", ["x"], ["x_shape"]),
        onnx.helper.make_node("Constant", [], ["axis_0"], value=onnx.helper.make_tensor("a0", 7, [1], [0])),
        onnx.helper.make_node("Constant", [], ["axis_1"], value=onnx.helper.make_tensor("a1", 7, [], [1])),
        onnx.helper.make_node("Gather", ["x_shape", "axis_0"], ["batch_1d"]),
        onnx.helper.make_node("Gather", ["x_shape", "axis_1"], ["time"]),
        onnx.helper.make_node("Expand", ["time", "batch_1d"], ["full_64"]),
        onnx.helper.make_node("Cast", ["full_64"], ["full_lengths"], to=onnx.TensorProto.INT32),
    ]
    for node in graph.graph.node:
        for i, name in enumerate(node.input):
            if name == "lengths":
                node.input[i] = "full_lengths"
    for node in reversed(nodes):
        graph.graph.node.insert(0, node)


def _rewrite(bundle: Path, graph: onnx.ModelProto, drop_lengths: bool) -> None:
    if drop_lengths:
        graph.graph.input.remove(next(i for i in graph.graph.input if i.name == "lengths"))
    data = graph.SerializeToString()
    (bundle / "model.onnx").write_bytes(data)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    if drop_lengths:
        doc["onnx"]["inputs"] = [t for t in doc["onnx"]["inputs"] if t["name"] != "lengths"]
    (bundle / "manifest.json").write_text(json.dumps(doc))


def test_a_graph_without_lengths_still_serves_mixed_lengths(ragged_repository, tmp_path) -> None:
    """A graph without a lengths input (e.g. imported): the scheduler's runs group by length instead of
    padding (service/batching.py plan_runs, the code that serves)."""
    bundle = tmp_path / "vowels_bi" / "1"
    shutil.copytree(ragged_repository / "vowels_bi" / "1", bundle)
    graph = onnx.load(bundle / "model.onnx")
    _answer_at_full_length(graph)
    _rewrite(bundle, graph, drop_lengths=True)
    old = ModelRuntime(bundle, Settings())
    old.load()
    new = _runtime(ragged_repository, "vowels_bi")
    assert not old.manifest.takes_lengths and new.manifest.takes_lengths
    rng = np.random.default_rng(1)
    sequences = [rng.normal(size=(n, 12)).astype(np.float32) for n in (5, 29, 5, 12)]
    answers = compute_now(old, sequences).outputs, compute_now(new, sequences).outputs
    assert np.abs(answers[0] - answers[1]).max() <= TOLERANCE
