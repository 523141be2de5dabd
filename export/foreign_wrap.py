"""The foreign graph between the bundle contract's inputs and outputs, for `gru import` (importer.py).

The graph is wrapped, not rewritten: nodes before it take raw `x` (B, T, F), normalise it with the given
mean/std and transpose it to the graph's own layout; slice each GRU's initial state out of `state`; feed
`lengths` into every GRU's sequence_lens. Nodes after it give the chosen answer (with a Softmax or Sigmoid
added when the graph gives logits) as `output` and every GRU's last state packed as `next_state`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.foreign import INITIAL_H, SEQUENCE_LENS, ForeignGraph, Layout, Unsupported
from service.bundle import (
    BATCH_AXIS,
    LENGTHS_INPUT,
    OUTPUT,
    STATE_INPUT,
    STATE_OUTPUT,
    TIME_AXIS,
    X_INPUT,
)

PREFIX = "gru_import/"  # every tensor the wrapper adds
CONTRACT_NAMES = (X_INPUT, LENGTHS_INPUT, STATE_INPUT, OUTPUT, STATE_OUTPUT)  # renamed in the graph if taken


@dataclass
class Wiring:
    state: bool  # every GRU's initial state replaced by a slice of `state`
    lengths: bool  # `lengths` into every GRU's sequence_lens


def wrap(foreign: ForeignGraph, wiring: Wiring, mean: np.ndarray, std: np.ndarray,
         activation: str | None) -> bytes:
    """The wrapped graph, checked by onnx.checker."""
    model = copy.deepcopy(foreign.model)
    graph = model.graph
    del graph.value_info[:]  # shapes inferred for the original names; onnxruntime infers them again
    for name in CONTRACT_NAMES:
        _rename(graph, name, f"foreign/{name}")
    x_name, answer = _renamed(foreign.x.name), _renamed(foreign.output.name)
    replaced = {x_name, *(_renamed(n) for n in foreign.other_inputs)}
    kept_inputs = [i for i in graph.input if i.name not in replaced and not _is_initializer(graph, i.name)]
    before = _input_nodes(x_name, foreign.layout, mean, std)
    after: list[onnx.NodeProto] = []
    constants: list[onnx.TensorProto] = []
    state_size, heads = sum(g.h_size for g in foreign.grus), []
    offset = 0
    nodes = [n for n in graph.node if n.op_type == "GRU"]  # the same order as foreign.grus
    for i, (gru, node) in enumerate(zip(foreign.grus, nodes, strict=True)):
        _pad(node.input, INITIAL_H + 1)
        if wiring.lengths:
            node.input[SEQUENCE_LENS] = LENGTHS_INPUT
        elif node.input[SEQUENCE_LENS] in replaced:  # the graph's own lengths input: every step valid
            node.input[SEQUENCE_LENS] = ""
        if wiring.state:
            node.input[INITIAL_H] = _state_slice(before, constants, i, offset, gru.directions, gru.hidden,
                                                 gru.batch_first)
        elif node.input[INITIAL_H] in replaced:
            raise Unsupported(f"GRU node {node.name!r} reads its initial state from input "
                              f"{node.input[INITIAL_H]!r} while another GRU's state cannot be carried")
        _pad(node.output, 2)
        node.output[1] = node.output[1] or f"{PREFIX}y_h_{i}"
        heads.append(_packed_h(after, constants, i, node.output[1], gru.directions, gru.hidden,
                               gru.batch_first))
        offset += gru.h_size
    if activation:
        axis = {"axis": -1} if activation == "Softmax" else {}
        after.append(helper.make_node(activation, [answer], [f"{PREFIX}probabilities"], **axis))  # type: ignore[arg-type]
        answer = f"{PREFIX}probabilities"
    after.append(helper.make_node("Identity", [answer], [OUTPUT]))
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [BATCH_AXIS, foreign.output_size])]
    if wiring.state:
        after.append(helper.make_node("Concat", heads, [STATE_OUTPUT], axis=1))
        outputs.append(helper.make_tensor_value_info(STATE_OUTPUT, TensorProto.FLOAT,
                                                     [BATCH_AXIS, state_size]))
    constants += [numpy_helper.from_array(mean, f"{PREFIX}mean"),
                  numpy_helper.from_array(std, f"{PREFIX}std")]
    ordered = before + list(graph.node) + after
    del graph.node[:], graph.input[:], graph.output[:]
    graph.node.extend(ordered)
    graph.initializer.extend(constants)
    graph.input.extend([*_contract_inputs(foreign, wiring, state_size), *kept_inputs])
    graph.output.extend(outputs)
    _prune(graph)
    model.ir_version = max(model.ir_version, 4)  # initializers need not be graph inputs
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise Unsupported(f"the wrapped graph does not check ({exc})") from exc
    return model.SerializeToString()


def _contract_inputs(foreign: ForeignGraph, wiring: Wiring, state_size: int) -> list[onnx.ValueInfoProto]:
    time: int | str = foreign.fixed_length or TIME_AXIS
    x = [BATCH_AXIS, time, foreign.features]
    inputs = [helper.make_tensor_value_info(X_INPUT, TensorProto.FLOAT, x)]
    if wiring.state:
        inputs.append(helper.make_tensor_value_info(STATE_INPUT, TensorProto.FLOAT, [BATCH_AXIS, state_size]))
    if wiring.lengths:
        inputs.append(helper.make_tensor_value_info(LENGTHS_INPUT, TensorProto.INT32, [BATCH_AXIS]))
    return inputs


def _input_nodes(x_name: str, layout: Layout, mean: np.ndarray, std: np.ndarray) -> list[onnx.NodeProto]:
    """Raw x (B, T, F) -> (x - mean) / std -> the graph's layout -> the graph's input name."""
    nodes = [helper.make_node("Sub", [X_INPUT, f"{PREFIX}mean"], [f"{PREFIX}x_centred"]),
             helper.make_node("Div", [f"{PREFIX}x_centred", f"{PREFIX}std"], [f"{PREFIX}x_scaled"])]
    if layout == "tbf":
        nodes.append(helper.make_node("Transpose", [f"{PREFIX}x_scaled"], [f"{PREFIX}x_tbf"],
                                      perm=[1, 0, 2]))
    nodes.append(helper.make_node("Identity", [nodes[-1].output[0]], [x_name]))
    return nodes


def _state_slice(nodes: list[onnx.NodeProto], constants: list[onnx.TensorProto], i: int, offset: int,
                 directions: int, hidden: int, batch_first: bool) -> str:
    """state[:, offset : offset + D*H] as the GRU's initial_h: (D, B, H), or (B, D, H) with layout=1."""
    width = directions * hidden
    for name, value in (("starts", [offset]), ("ends", [offset + width]), ("axes", [1]),
                        ("shape", [0, directions, hidden])):
        constants.append(numpy_helper.from_array(np.array(value, np.int64), f"{PREFIX}h0_{i}_{name}"))
    flat, bdh, h0 = f"{PREFIX}h0_{i}_flat", f"{PREFIX}h0_{i}_bdh", f"{PREFIX}h0_{i}"
    nodes.append(helper.make_node("Slice", [STATE_INPUT, f"{PREFIX}h0_{i}_starts", f"{PREFIX}h0_{i}_ends",
                                            f"{PREFIX}h0_{i}_axes"], [flat]))
    reshaped = h0 if batch_first else bdh
    nodes.append(helper.make_node("Reshape", [flat, f"{PREFIX}h0_{i}_shape"], [reshaped]))
    if not batch_first:
        nodes.append(helper.make_node("Transpose", [bdh], [h0], perm=[1, 0, 2]))
    return h0


def _packed_h(nodes: list[onnx.NodeProto], constants: list[onnx.TensorProto], i: int, y_h: str,
              directions: int, hidden: int, batch_first: bool) -> str:
    """Y_h (D, B, H) (or (B, D, H)) -> (B, D*H), a piece of next_state."""
    constants.append(numpy_helper.from_array(np.array([0, directions * hidden], np.int64),
                                             f"{PREFIX}h_{i}_shape"))
    source = y_h
    if not batch_first:
        source = f"{PREFIX}h_{i}_bdh"
        nodes.append(helper.make_node("Transpose", [y_h], [source], perm=[1, 0, 2]))
    nodes.append(helper.make_node("Reshape", [source, f"{PREFIX}h_{i}_shape"], [f"{PREFIX}h_{i}"]))
    return f"{PREFIX}h_{i}"


def _pad(values: list[str], size: int) -> None:  # type: ignore[type-arg]
    while len(values) < size:
        values.append("")


def _renamed(name: str) -> str:
    return f"foreign/{name}" if name in CONTRACT_NAMES else name


def _is_initializer(graph: onnx.GraphProto, name: str) -> bool:
    return any(i.name == name for i in graph.initializer)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere it appears, subgraphs included."""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
    for tensor in graph.initializer:
        if tensor.name == old:
            tensor.name = new
    for node in graph.node:
        for values in (node.input, node.output):
            for k, name in enumerate(values):
                if name == old:
                    values[k] = new
        for attr in node.attribute:
            for sub in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
                _rename(sub, old, new)


def _prune(graph: onnx.GraphProto) -> None:
    """Drop the nodes and constants nothing reads any more (e.g. what built a replaced zero state)."""
    needed = {o.name for o in graph.output}
    for node in graph.node:
        for attr in node.attribute:
            for sub in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
                needed |= {name for inner in sub.node for name in inner.input}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o and o in needed for o in node.output):
            kept.append(node)
            needed |= set(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    constants = [c for c in graph.initializer if c.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(constants)
