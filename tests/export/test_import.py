"""`gru import` on graphs the project did not write: a plain torch.onnx.export of an nn.GRU classifier
(both exporters) and GRU graphs built with onnx.helper (both linear_before_reset values, ReLU candidates,
bidirectional, one sigmoid output). Each bundle answers as onnxruntime does on the original graph, for
a ragged batch and chunk by chunk where it says it streams; what it cannot do is refused with a reason."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from export.foreign import Unsupported
from export.importer import ImportRequest, import_graph
from export.verify import TOLERANCE
from service.batching import compute_now
from service.bundle import LENGTHS_INPUT, STATE_INPUT
from service.graph_check import load_bundle
from service.runtime import ModelRuntime
from service.settings import Settings
from tests.export.foreign_graphs import classifier


class TorchClassifier(nn.Module):
    """What someone else might train: nn.GRU, the last layer's final state, a linear head."""

    def __init__(self, features: int = 3, hidden: int = 8, classes: int = 4, softmax: bool = True):
        super().__init__()
        self.gru = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h_n = self.gru(x)
        logits = self.head(h_n[-1])
        return torch.softmax(logits, dim=-1) if self.softmax else logits


def torch_export(module: nn.Module, dynamo: bool) -> onnx.ModelProto:
    torch.manual_seed(0)
    module = module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}
            torch.onnx.export(module, (torch.randn(2, 10, 3),), buffer, input_names=["sequence"],
                              output_names=["probs"], dynamo=True, dynamic_shapes=(dims,), verbose=False)
        else:
            torch.onnx.export(module, (torch.randn(2, 10, 3),), buffer, input_names=["sequence"],
                              output_names=["probs"], dynamo=False, opset_version=17,
                              dynamic_axes={"sequence": {0: "batch", 1: "time"}, "probs": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def save(model: onnx.ModelProto, folder: Path, name: str) -> Path:
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def original_answers(path: Path, sequences: list[np.ndarray], time_major: bool,
                     mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """onnxruntime on the original graph, one sequence at a time, fed as that graph wants it."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    answers = []
    for seq in sequences:
        x = ((seq[None] - mean) / std).astype(np.float32)
        answers.append(session.run(None, {name: x.transpose(1, 0, 2) if time_major else x})[0][0])
    return np.stack(answers)


def runtime(bundle_dir: Path) -> ModelRuntime:
    loaded = ModelRuntime(bundle_dir, Settings())
    loaded.load()
    return loaded


def sequences(features: int, lengths: tuple[int, ...] = (17, 3, 9, 1), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, features)).astype(np.float32) for n in lengths]


def chunked(loaded: ModelRuntime, sequence: np.ndarray, cuts: tuple[int, ...]) -> np.ndarray:
    state = None
    for start, end in zip((0, *cuts), (*cuts, len(sequence)), strict=True):
        result = compute_now(loaded, [sequence[start:end]], None if state is None else state[None])
        answer, state = result.outputs[0], result.states[0]
    return answer


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_torch_onnx_export_of_an_nn_gru_classifier(tmp_path: Path, dynamo: bool) -> None:
    path = save(torch_export(TorchClassifier(), dynamo), tmp_path, "torch_gru")
    result = import_graph(path, tmp_path / "models", ImportRequest(name="torch_gru", task="classification",
                                                                   labels=["a", "b", "c", "d"]))
    manifest = result.manifest
    assert manifest.gru.num_layers == 2 and manifest.gru.linear_before_reset == 1
    assert manifest.state.size == 16 and manifest.takes_lengths and manifest.streaming.supported
    assert result.notes == []
    loaded = runtime(result.bundle_dir)
    batch = sequences(3)
    expected = original_answers(path, batch, time_major=False)
    assert np.abs(compute_now(loaded, batch).outputs - expected).max() <= TOLERANCE  # one padded run
    assert np.abs(chunked(loaded, batch[0], (5, 6)) - expected[0]).max() <= TOLERANCE


HELPER_CASES = [  # (lbr, candidate, bidirectional, layers)
    (0, "Tanh", False, 1), (1, "Tanh", False, 2), (0, "Relu", False, 2), (1, "Relu", True, 1),
    (0, "Relu", True, 2),
]


@pytest.mark.parametrize(("lbr", "candidate", "bidirectional", "layers"), HELPER_CASES)
def test_gru_graphs_built_with_onnx_helper(tmp_path: Path, lbr: int, candidate: str, bidirectional: bool,
                                           layers: int) -> None:
    graph = classifier(features=2, hidden=6, layers=layers, lbr=lbr, candidate=candidate,
                       bidirectional=bidirectional, classes=3, seed=lbr + layers)
    path = save(graph, tmp_path, "helper")
    request = ImportRequest(name="helper", task="classification", labels=["x", "y", "z"],
                            features=["u", "v"], mean=[0.5, -1.0], std=[2.0, 0.25])
    result = import_graph(path, tmp_path / "models", request)
    manifest = result.manifest
    assert (manifest.gru.linear_before_reset, manifest.gru.activation) == (lbr, candidate.lower())
    assert manifest.gru.bidirectional == bidirectional and manifest.gru.num_layers == layers
    assert manifest.state.size == layers * (2 if bidirectional else 1) * 6 and manifest.takes_lengths
    load_bundle(result.bundle_dir)  # the service's own cross-check of manifest and graph
    loaded = runtime(result.bundle_dir)
    batch = [s * np.float32([2.0, 0.25]) + np.float32([0.5, -1.0]) for s in sequences(2)]  # raw units
    expected = original_answers(path, batch, time_major=True, mean=np.float32([0.5, -1.0]),
                                std=np.float32([2.0, 0.25]))
    assert np.abs(compute_now(loaded, batch).outputs - expected).max() <= TOLERANCE
    if bidirectional:
        assert not manifest.streaming.supported and "bidirectional" in (manifest.streaming.reason or "")
    else:
        assert manifest.streaming.supported
        assert np.abs(chunked(loaded, batch[0], (4, 5, 11)) - expected[0]).max() <= TOLERANCE


def test_one_sigmoid_output_is_a_binary_probability_naming_both_classes(tmp_path: Path) -> None:
    path = save(classifier(classes=1, candidate="Relu", lbr=0), tmp_path, "binary")
    result = import_graph(path, tmp_path / "models", ImportRequest(name="binary", task="classification",
                                                                   labels=["normal", "fault"]))
    output = result.manifest.output
    assert (output.kind, output.size, output.labels, output.positive_label) == \
        ("probability", 1, ["normal", "fault"], "fault")
    batch = sequences(2)
    got = compute_now(runtime(result.bundle_dir), batch).outputs
    assert got.shape == (4, 1)
    assert np.abs(got - original_answers(path, batch, time_major=True)).max() <= TOLERANCE


def test_logits_need_the_activation_named_and_then_get_it(tmp_path: Path) -> None:
    path = save(torch_export(TorchClassifier(softmax=False), dynamo=False), tmp_path, "logits")
    request = ImportRequest(name="logits", task="classification", labels=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"computed by Gemm, not Softmax or Sigmoid: pass --output-activ"):
        import_graph(path, tmp_path / "models", request)
    request.output_activation = "softmax"
    result = import_graph(path, tmp_path / "models", request)
    batch = sequences(3)
    logits = original_answers(path, batch, time_major=False)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.abs(compute_now(runtime(result.bundle_dir), batch).outputs - softmax).max() <= TOLERANCE


def test_a_graph_reading_the_last_step_of_y_takes_no_lengths_but_answers_ragged_batches(tmp_path: Path
                                                                                          ) -> None:
    """Like tf2onnx's Keras graphs: the answer reads Y at the last time step, which padding would zero;
    the bundle then takes no lengths (the service runs one length at a time) and still streams."""
    graph = classifier(classes=3)
    nodes = list(graph.graph.node)
    at = next(i for i, n in enumerate(nodes) if n.op_type == "Transpose" and n.input[0] == "Yh0")
    last_step = [onnx.helper.make_node("Gather", ["Y0", "minus_one"], ["Y_last"], axis=0),  # (D, B, H)
                 onnx.helper.make_node("Transpose", ["Y_last"], ["h_bdh"], perm=[1, 0, 2])]
    del graph.graph.node[:]
    graph.graph.node.extend(nodes[:at] + last_step + nodes[at + 1 :])
    graph.graph.initializer.append(onnx.numpy_helper.from_array(np.array(-1, np.int64), "minus_one"))
    path = save(graph, tmp_path, "last_step")
    result = import_graph(path, tmp_path / "models", ImportRequest(name="last", task="classification",
                                                                   labels=["x", "y", "z"]))
    assert not result.manifest.takes_lengths and result.manifest.streaming.supported
    assert any("padded batches" in note for note in result.notes)
    loaded = runtime(result.bundle_dir)
    batch = sequences(2)
    expected = original_answers(path, batch, time_major=True)
    assert np.abs(compute_now(loaded, batch).outputs - expected).max() <= TOLERANCE
    assert np.abs(chunked(loaded, batch[0], (6,)) - expected[0]).max() <= TOLERANCE


def test_a_graph_without_a_gru_node_is_refused_with_the_reason(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "time", 1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "time", 1])
    model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])],
                                                          "no_gru", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(Unsupported, match=r"no GRU node \(its ops: Relu\).*Loop or Scan"):
        import_graph(save(model, tmp_path, "relu"), tmp_path / "models",
                     ImportRequest(name="relu", task="regression"))


@pytest.mark.parametrize(("change", "message"), [
    ({"labels": ["a", "b"]}, r"gives 3 values; --labels names 2"),
    ({"labels": None}, r"--labels is required"),
    ({"mean": [0.0, 0.0]}, r"--mean and --std go together"),
    ({"mean": [0.0], "std": [1.0]}, r"one number per feature \(2\)"),
    ({"features": ["only_one"]}, r"--features names 1 feature\(s\); the graph takes 2"),
    ({"output_name": "nope"}, r"--output 'nope' is not among the graph's outputs \['probs'\]"),
])
def test_what_the_user_gives_is_checked_against_the_graph(tmp_path: Path, change: dict, message: str) -> None:
    path = save(classifier(), tmp_path, "helper")
    request = ImportRequest(name="h", task="classification", labels=["x", "y", "z"])
    for key, value in change.items():
        setattr(request, key, value)
    with pytest.raises(ValueError, match=message):
        import_graph(path, tmp_path / "models", request)
    assert not (tmp_path / "models").exists()  # nothing written


def test_the_contract_inputs_are_the_bundles_and_nothing_else(tmp_path: Path) -> None:
    path = save(classifier(), tmp_path, "helper")
    result = import_graph(path, tmp_path / "models", ImportRequest(name="h", task="classification",
                                                                   labels=["x", "y", "z"]))
    graph = onnx.load(str(result.bundle_dir / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["x", STATE_INPUT, LENGTHS_INPUT]
    assert [o.name for o in graph.graph.output] == ["output", "next_state"]
