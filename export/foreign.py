"""Reading a GRU graph written elsewhere (`gru import`): what the graph itself says. Its GRU nodes (as one
manifest `gru` spec), its data input and that input's axis order, its answer, and where each GRU's
initial state and sequence lengths come from. What it cannot say (task, labels, normalisation) the user
gives; anything this module cannot work out is an Unsupported error that names the flag to pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import onnx
from onnx import helper, numpy_helper

from service.bundle import ONNX_ACTIVATIONS, GRUSpec

Layout = Literal["btf", "tbf"]  # the data input's axes: batch-major (B, T, F) or time-major (T, B, F)
INITIAL_H, SEQUENCE_LENS = 5, 4  # the ONNX GRU's input indices
# Ops that keep each axis where it is (elementwise, or a matmul over the last axis by a constant)
AXIS_KEEPING = {"Identity", "Cast", "Add", "Sub", "Mul", "Div", "Relu", "Tanh", "Sigmoid", "MatMul"}
# Ops through which an all-zero tensor stays all zeros (a graph that builds its initial state from zeros)
ZERO_KEEPING = {"Identity", "Cast", "Expand", "Unsqueeze", "Squeeze", "Reshape", "Tile", "Transpose", "Slice",
                "Gather", "Split"}  # each reads its data from input 0


class Unsupported(ValueError):
    """The graph cannot be imported as it is; the message says why and what to pass."""


@dataclass
class GRUNode:
    node: onnx.NodeProto
    directions: int
    hidden: int
    batch_first: bool  # the node's `layout` attribute (opset 14+): X, Y, initial_h and Y_h batch-major

    @property
    def h_size(self) -> int:
        """directions x hidden: the floats of its h in the packed state."""
        return self.directions * self.hidden


@dataclass
class ForeignGraph:
    model: onnx.ModelProto
    grus: list[GRUNode]
    gru: GRUSpec
    x: onnx.ValueInfoProto
    layout: Layout
    features: int
    fixed_length: int | None  # the time axis when the graph fixes it
    output: onnx.ValueInfoProto
    output_op: str  # the op that computes the answer (Softmax, Sigmoid, Add, ...)
    opset: int
    other_inputs: list[str] = field(default_factory=list)  # a GRU's own h0 or lengths, fed by the caller

    @property
    def output_size(self) -> int:
        return int(dims(self.output)[-1])  # type: ignore[arg-type]


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value.type.tensor_type.shape.dim]


def read(model: onnx.ModelProto, input_name: str | None = None, output_name: str | None = None,
         layout: Layout | None = None) -> ForeignGraph:
    """Analyse `model`; the names and the layout are needed only where the graph is ambiguous."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise Unsupported(f"the graph is not a valid ONNX model: {exc}") from exc
    model = onnx.shape_inference.infer_shapes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise Unsupported(f"the graph uses ONNX opset {opset}; re-export it with opset 11 or newer")
    grus = gru_nodes(model)
    spec = gru_spec(grus)
    x, others = data_input(model, input_name)
    shape = dims(x)
    if len(shape) != 3:
        raise Unsupported(f"input {x.name!r} has shape {shape}; gru import needs (batch, time, features) "
                          "or (time, batch, features)")
    found = layout or input_layout(model, x.name)
    batch, time, features = shape if found == "btf" else (shape[1], shape[0], shape[2])
    if isinstance(batch, int) and batch > 0:
        raise Unsupported(f"input {x.name!r} fixes the batch size at {batch} (shape {shape}); "
                          "re-export the graph with a dynamic batch axis")
    if not isinstance(features, int) or features <= 0:
        raise Unsupported(f"input {x.name!r} does not fix its number of features (shape {shape})")
    length = time if isinstance(time, int) and time > 0 else None
    output = answer_output(model, output_name)
    return ForeignGraph(model, grus, spec, x, found, features, length, output,
                        producer_op(model, output.name), opset, others)


def gru_nodes(model: onnx.ModelProto) -> list[GRUNode]:
    nodes = [n for n in model.graph.node if n.op_type == "GRU"]
    if not nodes:
        ops = sorted({n.op_type for n in model.graph.node})
        raise Unsupported(
            f"the graph has no GRU node (its ops: {', '.join(ops)}); gru import serves graphs whose "
            "recurrence is an ONNX GRU node, whose state it can carry in and out. A recurrence written as "
            "a Loop or Scan (e.g. tf2onnx's conversion of a Keras GRU that cuDNN cannot run, such as "
            "activation='relu') cannot be imported")
    grus = []
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        direction = attrs.get("direction", b"forward").decode()
        if direction == "reverse":
            raise Unsupported(f"GRU node {node.name!r} runs in reverse only; gru import takes forward or "
                              "bidirectional GRUs")
        hidden, layout = int(attrs.get("hidden_size", 0)), int(attrs.get("layout", 0))
        if hidden < 1:  # before (round 10): a pydantic dump for 0, a KeyError traceback when absent
            raise Unsupported(f"GRU node {node.name!r} has hidden_size {attrs.get('hidden_size')}; gru "
                              "import needs the attribute, 1 or more (torch.onnx.export, tf2onnx write it)")
        if layout:  # onnxruntime's CPU GRU kernel refuses it when the session is created
            raise Unsupported(f"GRU node {node.name!r} has layout=1 (batch-major), which onnxruntime's GRU "
                              "does not run; re-export it time-major (layout=0, the default: torch.onnx."
                              "export of nn.GRU(batch_first=True) writes that, with a Transpose before it)")
        grus.append(GRUNode(node, 2 if direction == "bidirectional" else 1, hidden, bool(layout)))
    return grus


def gru_spec(grus: list[GRUNode]) -> GRUSpec:
    """One spec for all the GRU nodes (the manifest has one): they must agree."""
    described = set()
    for gru in grus:
        attrs = {a.name: helper.get_attribute_value(a) for a in gru.node.attribute}
        names = [a.decode() for a in attrs.get("activations", [])] or ["Sigmoid", "Tanh"] * gru.directions
        gates, candidates = {n.lower() for n in names[0::2]}, {n.lower() for n in names[1::2]}
        by_onnx = {v.lower(): k for k, v in ONNX_ACTIVATIONS.items()}
        if gates != {"sigmoid"} or len(candidates) != 1 or not candidates <= set(by_onnx):
            raise Unsupported(f"GRU node {gru.node.name!r} has activations {names}; gru import takes "
                              f"Sigmoid gates and one candidate of {sorted(ONNX_ACTIVATIONS.values())}")
        tuned = [k for k in ("activation_alpha", "activation_beta") if k in attrs]
        if tuned:
            raise Unsupported(f"GRU node {gru.node.name!r} sets {tuned}; gru import takes ONNX's defaults")
        described.add((gru.hidden, gru.directions, int(attrs.get("linear_before_reset", 0)),
                       by_onnx[candidates.pop()]))
    if len(described) != 1:
        raise Unsupported(f"the GRU nodes differ (hidden size, directions, linear_before_reset, activation: "
                          f"{sorted(described)}); gru import takes GRU layers that agree")
    hidden, directions, lbr, activation = described.pop()
    return GRUSpec(hidden_size=hidden, num_layers=len(grus), bidirectional=directions == 2,
                   linear_before_reset=lbr, activation=activation)  # type: ignore[arg-type]


def data_input(model: onnx.ModelProto, name: str | None) -> tuple[onnx.ValueInfoProto, list[str]]:
    """The sequence input, and the other inputs (a GRU's own initial state or lengths, read directly)."""
    constants = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in constants]
    fed_to_gru = {n.input[k] for n in model.graph.node if n.op_type == "GRU"
                  for k in (SEQUENCE_LENS, INITIAL_H) if len(n.input) > k and n.input[k]}
    if name is not None:
        chosen = [i for i in inputs if i.name == name]
        if not chosen:
            raise Unsupported(f"--input {name!r} is not among the graph's inputs {[i.name for i in inputs]}")
    else:
        chosen = [i for i in inputs if i.name not in fed_to_gru]
        if len(chosen) != 1:
            raise Unsupported(f"the graph has inputs {[i.name for i in chosen]}; pass --input NAME for the "
                              "sequences")
    others = [i.name for i in inputs if i.name != chosen[0].name]
    strangers = [n for n in others if n not in fed_to_gru]
    if strangers:
        raise Unsupported(f"inputs {strangers} are neither the sequences nor a GRU's initial state or "
                          "lengths; gru import cannot feed them")
    return chosen[0], others


def input_layout(model: onnx.ModelProto, name: str) -> Layout:
    """Follow the input to the first GRU node through ops that keep or transpose axes: the GRU's X is
    (T, B, F) (or (B, T, F) with layout=1), which says where the input keeps time and batch."""
    consumers = _consumers(model)
    seen: dict[str, list[int]] = {name: [0, 1, 2]}  # tensor -> which input axis each of its axes is
    frontier = [name]
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            axes = seen[tensor]
            if node.op_type == "GRU" and node.input[0] == tensor:
                batch_first = any(a.name == "layout" and a.i == 1 for a in node.attribute)
                time_axis, batch_axis = (axes[1], axes[0]) if batch_first else (axes[0], axes[1])
                if (batch_axis, time_axis) == (0, 1):
                    return "btf"
                if (batch_axis, time_axis) == (1, 0):
                    return "tbf"
                break
            if node.op_type == "Transpose":
                perm = next(list(a.ints) for a in node.attribute if a.name == "perm")
                out = [axes[p] for p in perm]
            elif node.op_type in AXIS_KEEPING:
                out = axes
            else:
                continue
            for produced in node.output:
                if produced and produced not in seen:
                    seen[produced] = out
                    frontier.append(produced)
    raise Unsupported(f"cannot tell from the graph whether input {name!r} is (batch, time, features) or "
                      "(time, batch, features); pass --layout btf or --layout tbf")


def answer_output(model: onnx.ModelProto, name: str | None) -> onnx.ValueInfoProto:
    outputs = list(model.graph.output)
    if name is not None:
        chosen = [o for o in outputs if o.name == name]
        if not chosen:
            names = [o.name for o in outputs]
            raise Unsupported(f"--output {name!r} is not among the graph's outputs {names}")
        output = chosen[0]
    elif len(outputs) == 1:
        output = outputs[0]
    else:
        described = [f"{o.name} {dims(o)}" for o in outputs]
        raise Unsupported(f"the graph has outputs {described}; pass --output NAME for the answer")
    shape = dims(output)
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] <= 0:
        raise Unsupported(f"output {output.name!r} has shape {shape}; gru import serves one answer per "
                          "sequence, (batch, size) with a fixed size")
    return output


def producer_op(model: onnx.ModelProto, tensor: str) -> str:
    """The op that computes `tensor`, looking through ops that only move or rename it."""
    producers = {out: n for n in model.graph.node for out in n.output}
    node = producers.get(tensor)
    while node is not None and node.op_type in ("Identity", "Reshape", "Squeeze", "Flatten"):
        node = producers.get(node.input[0])
    return node.op_type if node is not None else "(graph input)"


def initial_state_source(model: onnx.ModelProto, gru: GRUNode) -> str | None:
    """None when the GRU's initial state can be replaced by the carried one: absent, a graph input, or a
    tensor the graph builds from zeros; otherwise what computes it."""
    name = gru.node.input[INITIAL_H] if len(gru.node.input) > INITIAL_H else ""
    if not name or name in {i.name for i in model.graph.input}:
        return None
    return None if is_all_zeros(model, name) else f"node {_producer_name(model, name)!r}"


def is_all_zeros(model: onnx.ModelProto, tensor: str) -> bool:
    constants = {i.name: i for i in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    if tensor in constants:
        return not numpy_helper.to_array(constants[tensor]).any()
    node = producers.get(tensor)
    if node is None:
        return False
    if node.op_type == "Constant":
        return not numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value")).any()
    if node.op_type == "ConstantOfShape":
        value = [a.t for a in node.attribute if a.name == "value"]
        return not value or not numpy_helper.to_array(value[0]).any()
    if node.op_type == "Concat":
        return all(is_all_zeros(model, name) for name in node.input)
    return node.op_type in ZERO_KEEPING and is_all_zeros(model, node.input[0])


def _producer_name(model: onnx.ModelProto, tensor: str) -> str:
    node = next((n for n in model.graph.node if tensor in n.output), None)
    return f"{node.name or tensor} ({node.op_type})" if node is not None else tensor


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found
