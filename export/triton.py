"""A Triton model-repository entry for a bundle's ONNX graph (onnxruntime backend):

    <triton_root>/<name>/config.pbtxt
    <triton_root>/<name>/<version>/model.onnx

Two forms, both the bundle's graph with a few nodes added at its edges, and both checked against the
bundle's graph with onnxruntime before anything is written:

- stateless (default): `x` in, `output` out; `h0` is built inside the graph as zeros of the request's
  batch size, so a client sends only `x`. Dynamic batching.
- sequence (`sequence=True`): sequence batching with implicit state. Triton keeps the state between the
  requests of a sequence and batches it along axis 0, but our graph's `h0`/`h_n` carry the batch on axis 1
  ([layers x directions, batch, hidden]); the Triton graph therefore transposes them at its edges, so its
  state is [batch, layers x directions, hidden]. `initial_state` with `zero_data` starts each sequence
  from zeros, as the service does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from export.bundle import publish_folder
from service.bundle import LENGTHS_INPUT, Manifest, load_bundle

CONFIG_FILE = "config.pbtxt"
INTERNAL = {"h0": "triton_h0_lbh", "h_n": "triton_h_n_lbh"}  # the graph's own [layers, batch, hidden] state
TOLERANCE = 1e-6  # the added nodes are exact (zeros, transposes); this only absorbs float noise


class TritonExportError(Exception):
    """The Triton graph does not compute what the bundle's graph computes."""


@dataclass(frozen=True)
class TritonOptions:
    max_batch_size: int = 64
    max_queue_delay_us: int = 1000
    sequence: bool = False  # sequence batching with implicit state instead of dynamic batching
    max_sequence_idle_us: int = 60_000_000


def write_triton_entry(bundle_dir: Path, triton_root: Path, options: TritonOptions | None = None) -> Path:
    """Build, verify and write the entry for one bundle; returns the version folder written."""
    options = options or TritonOptions()
    manifest, graph = load_bundle(bundle_dir)
    model = onnx.load_from_string(graph)
    triton_graph = batch_major_state(model) if options.sequence else zero_initial_state(model, manifest)
    triton_graph = whole_sequence_lengths(triton_graph)
    onnx.checker.check_model(triton_graph)
    triton_bytes = triton_graph.SerializeToString()
    verify(graph, triton_bytes, manifest, options.sequence)
    model_dir = triton_root / manifest.name
    final = publish_folder(model_dir / str(manifest.version), {"model.onnx": triton_bytes})
    config = model_dir / CONFIG_FILE
    config.with_suffix(".tmp").write_text(config_pbtxt(manifest, options))
    os.replace(config.with_suffix(".tmp"), config)
    return final


def zero_initial_state(model: onnx.ModelProto, manifest: Manifest) -> onnx.ModelProto:
    """h0 becomes zeros of shape [layers x directions, batch(x), hidden] inside the graph; only x and
    output remain at the edges."""
    model = _copy(model)
    graph, gru = model.graph, manifest.gru
    _remove(graph.input, "h0")
    _remove(graph.output, "h_n")
    graph.initializer.extend([
        helper.make_tensor("triton_batch_axis", TensorProto.INT64, [1], [0]),
        helper.make_tensor("triton_state_size", TensorProto.INT64, [1], [gru.state_size]),
        helper.make_tensor("triton_hidden_size", TensorProto.INT64, [1], [gru.hidden_size]),
    ])
    zeros = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Shape", ["x"], ["triton_x_shape"]),
        helper.make_node("Gather", ["triton_x_shape", "triton_batch_axis"], ["triton_batch"], axis=0),
        helper.make_node("Concat", ["triton_state_size", "triton_batch", "triton_hidden_size"],
                         ["triton_h0_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["triton_h0_shape"], ["h0"], value=zeros),
    ]
    _prepend(graph, nodes)
    return model


def batch_major_state(model: onnx.ModelProto) -> onnx.ModelProto:
    """h0/h_n at the edges become [batch, layers x directions, hidden]; inside, the graph is unchanged."""
    model = _copy(model)
    graph = model.graph
    for node in graph.node:
        node.input[:] = [INTERNAL.get(name, name) for name in node.input]
        node.output[:] = [INTERNAL.get(name, name) for name in node.output]
    _prepend(graph, [helper.make_node("Transpose", ["h0"], ["triton_h0_lbh"], perm=[1, 0, 2])])
    graph.node.append(helper.make_node("Transpose", ["triton_h_n_lbh"], ["h_n"], perm=[1, 0, 2]))
    for value in (*graph.input, *graph.output):
        if value.name in ("h0", "h_n"):
            dims = value.type.tensor_type.shape.dim
            first, second = onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension()
            first.CopyFrom(dims[1])
            second.CopyFrom(dims[0])
            dims[0].CopyFrom(first)
            dims[1].CopyFrom(second)
    return model


def whole_sequence_lengths(model: onnx.ModelProto) -> onnx.ModelProto:
    """Schema-2 graphs take `lengths` (padding); a Triton request's sequences are whole, so lengths
    becomes the request's time axis for every row, built inside the graph."""
    if not any(i.name == LENGTHS_INPUT for i in model.graph.input):
        return model
    model = _copy(model)
    graph = model.graph
    _remove(graph.input, LENGTHS_INPUT)
    graph.initializer.extend([
        helper.make_tensor("tl_batch_axis", TensorProto.INT64, [1], [0]),
        helper.make_tensor("tl_time_axis", TensorProto.INT64, [1], [1]),
    ])
    _prepend(graph, [
        helper.make_node("Shape", ["x"], ["tl_shape"]),
        helper.make_node("Gather", ["tl_shape", "tl_batch_axis"], ["tl_batch"], axis=0),
        helper.make_node("Gather", ["tl_shape", "tl_time_axis"], ["tl_time"], axis=0),
        helper.make_node("Cast", ["tl_time"], ["tl_time32"], to=TensorProto.INT32),
        helper.make_node("Expand", ["tl_time32", "tl_batch"], [LENGTHS_INPUT]),
    ])
    return model


def verify(graph: bytes, triton_graph: bytes, manifest: Manifest, sequence: bool) -> None:
    """The Triton graph against the bundle's, at two batch sizes and lengths."""
    original = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    wrapped = ort.InferenceSession(triton_graph, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    gru, features = manifest.gru, manifest.inputs.num_features
    for batch, length in ((1, 3), (5, min(17, manifest.inputs.max_length))):
        x = rng.normal(size=(batch, length, features)).astype(np.float32)
        h0 = rng.normal(size=(gru.state_size, batch, gru.hidden_size)).astype(np.float32) if sequence \
            else np.zeros((gru.state_size, batch, gru.hidden_size), np.float32)
        feeds = {"x": x, "h0": h0}
        if any(i.name == LENGTHS_INPUT for i in original.get_inputs()):
            feeds[LENGTHS_INPUT] = np.full(batch, length, np.int32)
        expected_out, expected_h = original.run(None, feeds)
        if sequence:
            got_out, got_h = wrapped.run(["output", "h_n"], {"x": x, "h0": h0.transpose(1, 0, 2).copy()})
            pairs = [("output", got_out, expected_out), ("h_n", got_h.transpose(1, 0, 2), expected_h)]
        else:
            pairs = [("output", wrapped.run(["output"], {"x": x})[0], expected_out)]
        for name, got, expected in pairs:
            diff = float(np.max(np.abs(got - expected)))
            if diff > TOLERANCE:
                raise TritonExportError(f"Triton graph's {name} differs from the bundle's by {diff:.2e} at "
                                        f"batch {batch}, length {length}")


def config_pbtxt(manifest: Manifest, options: TritonOptions) -> str:
    """The model configuration in protobuf text format; dims exclude the batch axis (max_batch_size > 0)."""
    gru, features, outputs = manifest.gru, manifest.inputs.num_features, manifest.output.size
    preferred = [b for b in (4, 8, 16, 32, 64, 128, 256) if b <= options.max_batch_size] or \
        [options.max_batch_size]
    lines = [
        f"# Written by `gru export` from bundle {manifest.name}/{manifest.version}; its manifest.json says",
        "# the features, labels and what the output means.",
        f'name: "{manifest.name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {options.max_batch_size}",
        "input [",
        f'  {{ name: "x" data_type: TYPE_FP32 dims: [ -1, {features} ] }}',
        "]",
        "output [",
        f'  {{ name: "output" data_type: TYPE_FP32 dims: [ {outputs} ] }}',
        "]",
    ]
    batching = (f"preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
                f"max_queue_delay_microseconds: {options.max_queue_delay_us}")
    if not options.sequence:
        lines += ["dynamic_batching {", f"  {batching}", "}"]
        return "\n".join(lines) + "\n"
    state_dims = f"[ {gru.state_size}, {gru.hidden_size} ]"
    lines += [
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {options.max_sequence_idle_us}",
        f"  oldest {{ max_candidate_sequences: {options.max_batch_size} {batching} }}",
        "  state [",
        "    {",
        '      input_name: "h0"',
        '      output_name: "h_n"',
        "      data_type: TYPE_FP32",
        f"      dims: {state_dims}",
        f'      initial_state {{ name: "zeros" data_type: TYPE_FP32 dims: {state_dims} zero_data: true }}',
        "    }",
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _remove(values, name: str) -> None:  # type: ignore[no-untyped-def]
    for i, value in enumerate(values):
        if value.name == name:
            del values[i]
            return
    raise TritonExportError(f"the graph has no {name!r}; expected the bundle's I/O (x, h0 -> output, h_n)")


def _prepend(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
