"""Exported graphs answer a padded batch of mixed lengths exactly as each sequence alone (onnxruntime,
sequence_lens in every GRU node), for uni- and bidirectional stacks, and as PyTorch's packed run."""

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
from service.bundle import BundleError, load_bundle
from service.runtime import ModelRuntime, pad_batch
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
    together = runtime.predict_many(sequences)
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
    state = rng.normal(size=(len(sequences), runtime.state_size)).astype(np.float32)
    got, got_state = runtime.run(x, lengths, state)
    with torch.no_grad():
        ref, ref_state = model.stream(torch.as_tensor(x), torch.as_tensor(state), torch.as_tensor(lengths))
    assert np.abs(got - ref.numpy()).max() <= TOLERANCE
    assert np.abs(got_state - ref_state.numpy()).max() <= TOLERANCE


def test_a_gru_node_without_sequence_lens_is_refused(ragged_repository: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "vowels_bi" / "1"
    shutil.copytree(ragged_repository / "vowels_bi" / "1", bundle)
    graph = onnx.load(bundle / "model.onnx")
    next(n for n in graph.graph.node if n.op_type == "GRU").input[4] = ""
    data = graph.SerializeToString()
    (bundle / "model.onnx").write_bytes(data)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="lengths"):
        load_bundle(bundle)


def test_a_graph_without_lengths_still_serves_mixed_lengths(ragged_repository, tmp_path) -> None:
    """A graph without a lengths input (e.g. imported): the runtime groups by length instead of padding."""
    bundle = tmp_path / "vowels_bi" / "1"
    shutil.copytree(ragged_repository / "vowels_bi" / "1", bundle)
    graph = onnx.load(bundle / "model.onnx")
    for node in graph.graph.node:
        if node.op_type == "GRU":
            node.input[4] = ""
    lengths_input = next(i for i in graph.graph.input if i.name == "lengths")
    graph.graph.input.remove(lengths_input)
    data = graph.SerializeToString()
    (bundle / "model.onnx").write_bytes(data)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    doc["onnx"]["inputs"] = [t for t in doc["onnx"]["inputs"] if t["name"] != "lengths"]
    (bundle / "manifest.json").write_text(json.dumps(doc))
    old = ModelRuntime(bundle, Settings())
    old.load()
    new = _runtime(ragged_repository, "vowels_bi")
    assert not old.manifest.takes_lengths and new.manifest.takes_lengths
    rng = np.random.default_rng(1)
    sequences = [rng.normal(size=(n, 12)).astype(np.float32) for n in (5, 29, 5, 12)]
    assert np.abs(old.predict_many(sequences) - new.predict_many(sequences)).max() <= TOLERANCE
