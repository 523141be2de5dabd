"""GRU graphs the project did not write: built node by node with onnx.helper (time-major input, as a raw
ONNX GRU takes it), and the NumPy oracle for them in ONNX's weight layout."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from training.reference import gru_forward

OPSET = 17


def gru_weights(rng: np.random.Generator, features: int, hidden: int, directions: int,
                scale: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX's W (D, 3H, F), R (D, 3H, H), B (D, 6H), gates in ONNX's order z, r, h."""
    w = rng.uniform(-scale, scale, (directions, 3 * hidden, features)).astype(np.float32)
    r = rng.uniform(-scale, scale, (directions, 3 * hidden, hidden)).astype(np.float32)
    b = rng.uniform(-scale, scale, (directions, 6 * hidden)).astype(np.float32)
    return w, r, b


def torch_layout(w: np.ndarray, r: np.ndarray, b: np.ndarray, layer: int = 0) -> dict[str, np.ndarray]:
    """ONNX's (z, r, h) blocks as nn.GRU's named (r, z, n) parameters, for training/reference.py."""
    hidden = r.shape[2]

    def reorder(m: np.ndarray) -> np.ndarray:
        z, rr, h = m[:hidden], m[hidden : 2 * hidden], m[2 * hidden :]
        return np.concatenate([rr, z, h]).astype(np.float64)

    params = {}
    for d, suffix in enumerate(["", "_reverse"][: w.shape[0]]):
        params[f"weight_ih_l{layer}{suffix}"] = reorder(w[d])
        params[f"weight_hh_l{layer}{suffix}"] = reorder(r[d])
        params[f"bias_ih_l{layer}{suffix}"] = reorder(b[d, : 3 * hidden])
        params[f"bias_hh_l{layer}{suffix}"] = reorder(b[d, 3 * hidden :])
    return params


def gru_attributes(hidden: int, lbr: int, candidate: str, bidirectional: bool) -> dict:
    directions = 2 if bidirectional else 1
    return {"hidden_size": hidden, "linear_before_reset": lbr,
            "direction": "bidirectional" if bidirectional else "forward",
            "activations": ["Sigmoid", candidate] * directions}


def single_gru(features: int, hidden: int, lbr: int, candidate: str, bidirectional: bool,
               seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """X (T, B, F), initial_h (D, B, H) -> Y, Y_h: one GRU node; also its weights in nn.GRU's layout."""
    directions = 2 if bidirectional else 1
    w, r, b = gru_weights(np.random.default_rng(seed), features, hidden, directions)
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "initial_h"], ["Y", "Y_h"], name="gru",
                            **gru_attributes(hidden, lbr, candidate, bidirectional))
    graph = helper.make_graph(
        [node], "single_gru",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["seq", "batch", features]),
         helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [directions, "batch", hidden])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["seq", directions, "batch", hidden]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [directions, "batch", hidden])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")])
    return _model(graph), torch_layout(w, r, b)


def classifier(features: int = 2, hidden: int = 6, layers: int = 1, lbr: int = 1, candidate: str = "Tanh",
               bidirectional: bool = False, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """A GRU classifier as another tool might write it: "input" (T, B, F) time-major -> stacked GRU nodes
    (layer outputs (T, D, B, H) reshaped to (T, B, D*H) between them) -> the last Y_h -> dense ->
    Softmax over `classes`, or one Sigmoid probability when classes == 1."""
    rng = np.random.default_rng(seed)
    directions = 2 if bidirectional else 1
    nodes, inits, current, width = [], [], "input", features
    inits.append(numpy_helper.from_array(np.array([0, 0, directions * hidden], np.int64), "seq_shape"))
    inits.append(numpy_helper.from_array(np.array([0, directions * hidden], np.int64), "batch_shape"))
    for layer in range(layers):
        w, r, b = gru_weights(rng, width, hidden, directions)
        inits += [numpy_helper.from_array(w, f"W{layer}"), numpy_helper.from_array(r, f"R{layer}"),
                  numpy_helper.from_array(b, f"B{layer}")]
        nodes.append(helper.make_node("GRU", [current, f"W{layer}", f"R{layer}", f"B{layer}"],
                                      [f"Y{layer}", f"Yh{layer}"], name=f"gru{layer}",
                                      **gru_attributes(hidden, lbr, candidate, bidirectional)))
        nodes.append(helper.make_node("Transpose", [f"Y{layer}"], [f"Yt{layer}"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"Yt{layer}", "seq_shape"], [f"seq{layer}"]))
        current, width = f"seq{layer}", directions * hidden
    last = layers - 1
    nodes.append(helper.make_node("Transpose", [f"Yh{last}"], ["h_bdh"], perm=[1, 0, 2]))
    nodes.append(helper.make_node("Reshape", ["h_bdh", "batch_shape"], ["features"]))
    dense_w = rng.uniform(-1, 1, (directions * hidden, classes)).astype(np.float32)
    inits += [numpy_helper.from_array(dense_w, "dense_w"),
              numpy_helper.from_array(rng.uniform(-0.5, 0.5, classes).astype(np.float32), "dense_b")]
    nodes.append(helper.make_node("MatMul", ["features", "dense_w"], ["dense_mm"]))
    nodes.append(helper.make_node("Add", ["dense_mm", "dense_b"], ["logits"]))
    nodes.append(helper.make_node("Softmax" if classes > 1 else "Sigmoid", ["logits"], ["probs"],
                                  **({"axis": -1} if classes > 1 else {})))
    graph = helper.make_graph(
        nodes, "foreign_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["seq", "batch", features])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])], inits)
    return _model(graph)


def reference(x_tbf: np.ndarray, params: dict[str, np.ndarray], h0: np.ndarray, lbr: int, activation: str,
              bidirectional: bool) -> tuple[np.ndarray, np.ndarray]:
    """The NumPy GRU on a time-major x; returns Y (T, D, B, H) and Y_h (D, B, H) as ONNX lays them out."""
    y, h_n = gru_forward(x_tbf.transpose(1, 0, 2), params, 1, bidirectional, h0,
                         reset="after" if lbr else "before", activation=activation)
    batch, steps = x_tbf.shape[1], x_tbf.shape[0]
    directions = 2 if bidirectional else 1
    return y.reshape(batch, steps, directions, -1).transpose(1, 2, 0, 3), h_n


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
