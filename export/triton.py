"""A Triton model-repository entry for a bundle's ONNX graph (onnxruntime backend):

    <triton_root>/<name>/config.pbtxt
    <triton_root>/<name>/<version>/model.onnx

Two forms, both the bundle's graph with a few nodes added at its edges, and both checked against the
bundle's graph with onnxruntime before anything is written:

- stateless (default): `x` in, `output` out; the `state` is built inside the graph as zeros of the
  request's batch size, so a client sends only `x`. Dynamic batching.
- sequence (`sequence=True`): sequence batching with implicit state. Triton keeps the state between the
  requests of a sequence and batches it along axis 0, as our graph's `state`/`next_state` [batch, S] do.
  `initial_state` with `zero_data` starts each sequence from zeros, as the service does.

The config's dims come from the manifest's tensor specs (the batch axis dropped, dynamic axes -1), so
every task gets the right shapes (a tagging output is [time, labels]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from service.bundle import (
    LENGTHS_INPUT,
    OUTPUT,
    STATE_INPUT,
    STATE_OUTPUT,
    X_INPUT,
    Manifest,
    TensorSpec,
)
from service.graph_check import load_bundle
from training.publish import publish_folder, write_atomic

CONFIG_FILE = "config.pbtxt"
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
    if options.sequence and not manifest.streaming.supported:
        raise TritonExportError(f"{manifest.name} cannot use sequence batching: {manifest.streaming_refusal}")
    model = onnx.load_from_string(graph)
    triton_graph = model if options.sequence else zero_initial_state(model, manifest)
    triton_graph = whole_sequence_lengths(triton_graph)
    onnx.checker.check_model(triton_graph)
    triton_bytes = triton_graph.SerializeToString()
    verify(graph, triton_bytes, manifest, options.sequence)
    model_dir = triton_root / manifest.name
    final = publish_folder(model_dir / str(manifest.version), {"model.onnx": triton_bytes})
    write_atomic(model_dir / CONFIG_FILE, config_pbtxt(manifest, options).encode())
    return final


def zero_initial_state(model: onnx.ModelProto, manifest: Manifest) -> onnx.ModelProto:
    """The state becomes zeros of shape [batch(x), S] inside the graph; only x and output remain at the
    edges."""
    model = _copy(model)
    graph = model.graph
    if not manifest.state.size:
        return model
    _remove(graph.input, STATE_INPUT)
    _remove(graph.output, STATE_OUTPUT)
    graph.initializer.extend([
        helper.make_tensor("triton_batch_axis", TensorProto.INT64, [1], [0]),
        helper.make_tensor("triton_state_size", TensorProto.INT64, [1], [manifest.state.size]),
    ])
    zeros = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Shape", [X_INPUT], ["triton_x_shape"]),
        helper.make_node("Gather", ["triton_x_shape", "triton_batch_axis"], ["triton_batch"], axis=0),
        helper.make_node("Concat", ["triton_batch", "triton_state_size"], ["triton_state_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["triton_state_shape"], [STATE_INPUT], value=zeros),
    ]
    _prepend(graph, nodes)
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
    for batch, length in ((1, 3), (5, min(17, manifest.inputs.max_length))):
        x = rng.normal(size=(batch, length, manifest.inputs.num_features)).astype(np.float32)
        state = rng.normal(size=(batch, manifest.state.size)).astype(np.float32) if sequence \
            else np.zeros((batch, manifest.state.size), np.float32)
        feeds = {X_INPUT: x}
        if manifest.state.size:
            feeds[STATE_INPUT] = state
        if manifest.takes_lengths:
            feeds[LENGTHS_INPUT] = np.full(batch, length, np.int32)
        names = [OUTPUT, STATE_OUTPUT] if sequence else [OUTPUT]
        expected = original.run(names, feeds)
        wrapped_inputs = {i.name for i in wrapped.get_inputs()}
        got = wrapped.run(names, {k: v for k, v in feeds.items() if k in wrapped_inputs})
        for name, out, ref in zip(names, got, expected, strict=True):
            diff = float(np.max(np.abs(out - ref)))
            if diff > TOLERANCE:
                raise TritonExportError(f"Triton graph's {name} differs from the bundle's by {diff:.2e} at "
                                        f"batch {batch}, length {length}")


def config_pbtxt(manifest: Manifest, options: TritonOptions) -> str:
    """The model configuration in protobuf text format; dims exclude the batch axis (max_batch_size > 0)
    and come from the manifest's tensor specs."""
    specs = {t.name: t for t in (*manifest.onnx.inputs, *manifest.onnx.outputs)}
    preferred = [b for b in (4, 8, 16, 32, 64, 128, 256) if b <= options.max_batch_size] or \
        [options.max_batch_size]
    lines = [
        f"# Written by `gru export` from bundle {manifest.name}/{manifest.version}; its manifest.json says",
        "# the features, labels and what the output means.",
        f'name: "{manifest.name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {options.max_batch_size}",
        "input [",
        f'  {{ name: "{X_INPUT}" data_type: TYPE_FP32 dims: {triton_dims(specs[X_INPUT])} }}',
        "]",
        "output [",
        f'  {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: {triton_dims(specs[OUTPUT])} }}',
        "]",
    ]
    batching = (f"preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
                f"max_queue_delay_microseconds: {options.max_queue_delay_us}")
    if not options.sequence:
        lines += ["dynamic_batching {", f"  {batching}", "}"]
        return "\n".join(lines) + "\n"
    state_dims = triton_dims(specs[STATE_INPUT])
    lines += [
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {options.max_sequence_idle_us}",
        f"  oldest {{ max_candidate_sequences: {options.max_batch_size} {batching} }}",
        "  state [",
        "    {",
        f'      input_name: "{STATE_INPUT}"',
        f'      output_name: "{STATE_OUTPUT}"',
        "      data_type: TYPE_FP32",
        f"      dims: {state_dims}",
        f'      initial_state {{ name: "zeros" data_type: TYPE_FP32 dims: {state_dims} zero_data: true }}',
        "    }",
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"


def triton_dims(spec: TensorSpec) -> str:
    """A tensor spec's shape without its leading batch axis, dynamic axes as -1: `[ -1, 12 ]`."""
    return f"[ {', '.join(str(d) if isinstance(d, int) else '-1' for d in spec.shape[1:])} ]"


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _remove(values, name: str) -> None:  # type: ignore[no-untyped-def]
    for i, value in enumerate(values):
        if value.name == name:
            del values[i]
            return
    raise TritonExportError(f"the graph has no {name!r}; expected the bundle's I/O "
                            f"({X_INPUT}, {STATE_INPUT} -> {OUTPUT}, {STATE_OUTPUT})")


def _prepend(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
