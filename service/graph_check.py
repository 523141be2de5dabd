"""Loads a bundle and cross-checks its manifest against its ONNX graph: I/O names and shapes, GRU
attributes; and that the graph is self-contained (no tensor kept as external data)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import Message
from onnx import helper

from service.bundle import (
    LENGTHS_INPUT,
    MANIFEST_FILE,
    BundleError,
    GRUSpec,
    Manifest,
    TensorSpec,
    read_bundle_file,
    read_manifest,
    sha256_of,
)


def load_bundle(bundle_dir: Path) -> tuple[Manifest, bytes]:
    """Read and cross-check a bundle; return its manifest and the graph bytes for onnxruntime."""
    manifest = read_manifest(bundle_dir)
    where = f"{bundle_dir / MANIFEST_FILE}"
    if manifest.name != bundle_dir.parent.name or str(manifest.version) != bundle_dir.name:
        raise BundleError(
            f"{where}: name/version say {manifest.name}/{manifest.version} but the bundle sits in "
            f"{bundle_dir.parent.name}/{bundle_dir.name}"
        )
    graph_path = bundle_dir / manifest.onnx.file
    graph = read_bundle_file(graph_path, "graph")
    if sha256_of(graph) != manifest.onnx.sha256:
        raise BundleError(f"{where}: onnx.sha256 does not match {graph_path.name} (corrupt or replaced)")
    check_graph(manifest, graph, where)
    return manifest, graph


def check_graph(manifest: Manifest, graph: bytes, where: str) -> None:
    try:
        model = onnx.load_from_string(graph)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise BundleError(f"{where}: {manifest.onnx.file} is not a readable ONNX model ({exc})") from exc
    check_self_contained(model, f"{where}: {manifest.onnx.file}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != manifest.onnx.opset:
        raise BundleError(f"{where}: onnx.opset is {manifest.onnx.opset} but the graph uses {opset}")
    check_tensors("onnx.inputs", manifest.onnx.inputs, model.graph.input, where)
    check_tensors("onnx.outputs", manifest.onnx.outputs, model.graph.output, where)
    check_gru_nodes(manifest.gru, model, where, lengths_input=manifest.takes_lengths)


def check_self_contained(model: onnx.ModelProto, where: str) -> None:
    """A bundle is self-contained (DESIGN.md): a tensor kept as external data is read from a path that
    onnxruntime resolves against the server's working directory (a graph loaded from bytes has no folder),
    so its answers would depend on whatever file sits there. Refused, wherever the location points;
    `gru export` and `gru import` embed every tensor in the graph."""
    external = list(external_tensors(model))
    if external:
        raise BundleError(f"{where}: {len(external)} tensor(s) keep their data outside the graph as external "
                          f"data (first: {external[0][:80]!r}); a bundle must be self-contained: embed the "
                          "data in the graph (onnx.load, then onnx.save without save_as_external_data)")


def external_tensors(message: Message) -> Iterator[str]:
    """The names of the tensors kept as external data, wherever they sit in the model: initializers,
    sparse tensors, attributes, subgraphs, functions (every TensorProto the protobuf holds)."""
    if isinstance(message, onnx.TensorProto) and message.data_location == onnx.TensorProto.EXTERNAL:
        yield message.name
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:  # (protobuf 7 has no `label`: is_repeated, since 5.28)
            for item in value if descriptor.is_repeated else [value]:
                yield from external_tensors(item)


def check_tensors(field: str, specs: list[TensorSpec], values: list, where: str) -> None:
    graph_names = [v.name for v in values]
    if [s.name for s in specs] != graph_names:
        raise BundleError(f"{where}: {field} names {[s.name for s in specs]} != graph {graph_names}")
    for i, (spec, value) in enumerate(zip(specs, values, strict=True)):
        shape = value.type.tensor_type.shape.dim
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in shape]
        fixed = [(j, s) for j, s in enumerate(spec.shape) if isinstance(s, int)]
        if len(dims) != len(spec.shape) or any(dims[j] != s for j, s in fixed):
            raise BundleError(f"{where}: {field}[{i}].shape ({spec.name}) is {spec.shape}, graph has {dims}")


def check_gru_nodes(gru: GRUSpec, model: onnx.ModelProto, where: str, lengths_input: bool = False) -> None:
    """Every GRU node must match the trained cell: the reset-gate variant above all (DESIGN.md) and the
    candidate activation (`activations`, case-insensitive as onnxruntime reads it). Two layouts: one node
    per layer (bidirectional nodes when gru.bidirectional), or one forward node per layer and direction,
    as `gru export` writes them (a reverse direction reads each sequence reversed within its length).
    With a `lengths` input, either every GRU node reads it as sequence_lens, or none does and the graph
    reads it elsewhere (`gru export`: each node's sequence_lens is the valid steps or patches computed
    from it, and the front end and readout read it too); else padding leaks into answers."""
    nodes = [n for n in model.graph.node if n.op_type == "GRU"]
    if not nodes:
        raise BundleError(f"{where}: the graph has no GRU node; gru.* describes one")
    attributes = [{a.name: helper.get_attribute_value(a) for a in node.attribute} for node in nodes]
    forward = all(a.get("direction", b"forward") == b"forward" for a in attributes)
    per_direction = gru.bidirectional and forward
    expected_nodes = gru.directed_layers if per_direction else gru.num_layers
    if len(nodes) != expected_nodes:
        raise BundleError(f"{where}: gru.num_layers is {gru.num_layers}"
                          f"{' (x 2 directions)' if per_direction else ''}, graph has {len(nodes)} GRU nodes")
    directions = 2 if gru.bidirectional and not per_direction else 1
    direction = b"bidirectional" if directions == 2 else b"forward"
    expected_activations = [a.lower() for a in gru.onnx_activations][: 2 * directions]
    wired = [len(n.input) > 4 and n.input[4] == LENGTHS_INPUT for n in nodes]
    for node, attrs, reads_lengths in zip(nodes, attributes, wired, strict=True):
        activations = [a.decode().lower() for a in attrs.get("activations", [])] or (
            ["sigmoid", "tanh"] * directions)  # ONNX's, when absent
        checks = {
            "gru.linear_before_reset": (attrs.get("linear_before_reset", 0), gru.linear_before_reset),
            "gru.hidden_size": (attrs.get("hidden_size"), gru.hidden_size),
            "gru.bidirectional": (attrs.get("direction", b"forward"), direction),
            "gru.activation": (activations, expected_activations),
            "gru.activation (alpha/beta attributes)": (
                [k for k in ("activation_alpha", "activation_beta") if k in attrs], []),
        }
        if lengths_input and any(wired):  # some nodes read lengths: every one must
            checks["onnx.inputs (lengths)"] = (node.input[4] if reads_lengths else "", LENGTHS_INPUT)
        for field, (found, expected) in checks.items():
            if found != expected:
                raise BundleError(
                    f"{where}: {field} says {expected!r} but GRU node {node.name!r} has {found!r}"
                )
    if lengths_input and not any(LENGTHS_INPUT in node.input for node in model.graph.node):
        raise BundleError(f"{where}: onnx.inputs has {LENGTHS_INPUT!r} but no node of the graph reads it")
