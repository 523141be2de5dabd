"""`gru import`: a GRU graph trained elsewhere -> a bundle the service serves like any other.

Read the graph (foreign.py), ask the user only for what it cannot say (ImportRequest), wrap it into the
bundle contract (foreign_wrap.py), check on onnxruntime what the bundle can promise (foreign_checks.py),
write the bundle with its manifest and a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto

from export.bundle import next_version, write_bundle
from export.foreign import ForeignGraph, Layout, dims, initial_state_source, read
from export.foreign_checks import Probe, onnxruntime_refusals, streaming_refusal
from export.foreign_wrap import Wiring, wrap
from export.verify import TOLERANCE
from service.bundle import (
    InputSpec,
    Manifest,
    NormalizationSpec,
    OnnxSpec,
    OutputSpec,
    ParitySpec,
    StatePart,
    StateSpec,
    StreamingSpec,
    TensorSpec,
    TrainingInfo,
    name_problem,
    sha256_of,
)

OutputActivation = Literal["auto", "softmax", "sigmoid", "none"]


@dataclass
class ImportRequest:
    """What the graph cannot say, from the user (`gru import` flags)."""

    name: str
    task: Literal["classification", "regression", "forecast"]
    labels: list[str] | None = None  # classification: one per output, or two for one sigmoid output
    positive_label: str | None = None  # one sigmoid output: whose probability it is (default: labels[1])
    features: list[str] | None = None  # default feature_0, feature_1, ...
    mean: list[float] | None = None  # per feature: the graph wants (x - mean) / std
    std: list[float] | None = None
    input_name: str | None = None
    output_name: str | None = None
    layout: Layout | None = None
    output_activation: OutputActivation = "auto"  # what turns the answer into probabilities
    length: int | None = None  # a typical sequence length (checks, warm-up); default 24 or the fixed one
    max_length: int | None = None
    version: int | None = None
    overwrite: bool = False


@dataclass
class ImportResult:
    bundle_dir: Path
    manifest: Manifest
    notes: list[str] = field(default_factory=list)  # what the bundle does not support, and why


def import_graph(source: Path, repository: Path, request: ImportRequest) -> ImportResult:
    if problem := name_problem(request.name):
        raise ValueError(f"model name {problem}")
    check_flags(request)
    original = load_source(source)
    foreign = read(original, request.input_name, request.output_name, request.layout)
    output, activation = output_spec(foreign, request)
    mean, std = _normalisation(foreign, request)
    length = foreign.fixed_length or request.length or 24
    notes: list[str] = []
    blocked = [f"GRU node {g.node.name!r}'s initial state is computed in the graph ({source_of}), not "
               "carried" for g in foreign.grus if (source_of := initial_state_source(foreign.model, g))]
    wiring = Wiring(state=not blocked, lengths=foreign.fixed_length is None)
    graph = wrap(foreign, wiring, mean, std, activation)
    probe = Probe(foreign, mean, std, activation, length)
    with onnxruntime_refusals():
        diff, cases = probe.against_original(original.SerializeToString(), graph)
        if wiring.lengths and (ragged := probe.padded_vs_alone(graph)) > TOLERANCE:
            notes.append(f"padded batches: no lengths input (a padded batch's answers differ from each "
                         f"sequence's own by {ragged:.2e}: the graph reads more than each GRU's last valid "
                         "state); the service runs one length at a time")
            wiring.lengths = False
            graph = wrap(foreign, wiring, mean, std, activation)
        refusal = blocked[0] if blocked else streaming_refusal(foreign, probe, graph)
    if refusal:
        notes.append(f"streaming: refused ({refusal})")
    manifest = _manifest(foreign, request, graph, output, mean, std, length, wiring, refusal, diff, cases,
                         sha256_of(source), source.name, repository)
    report = _report(source, foreign, manifest, diff, notes)
    bundle_dir = write_bundle(repository, manifest, graph, request.overwrite, {"report.md": report.encode()})
    return ImportResult(bundle_dir, manifest, notes)


def check_flags(request: ImportRequest) -> None:
    """What the user gives, before any work. Before (round 10): --length -5 said "negative dimensions are
    not allowed", --max-length and --version -1 were pydantic dumps, --version 0 took the next version;
    --labels a,a,b and --features x,x were written into the manifest (two classes, or two inputs, under
    one name: a CSV's column x read for both)."""
    for flag, value in (("--length", request.length), ("--max-length", request.max_length),
                        ("--version", request.version)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: give 1 or more")
    for flag, names in (("--labels", request.labels), ("--features", request.features)):
        twice = sorted({n for n in names or [] if (names or []).count(n) > 1})
        if twice:
            raise ValueError(f"{flag} names {twice} more than once; give each once, in the graph's order")


def load_source(source: Path) -> onnx.ModelProto:
    """The graph with its external data, read only from the graph's own folder (onnx's path check: no
    absolute location, no '..' out of it, no symbolic link). Before (round 10) a refused location was
    reported as "... is not an ONNX model (...)", and a missing data file the same way."""
    try:
        model = onnx.load(str(source), load_external_data=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"{source} is not an ONNX model ({exc})") from exc
    try:
        onnx.load_external_data_for_model(model, str(source.parent))
    except Exception as exc:  # onnx's ValidationError (a location it refuses), OSError (a missing file)
        raise ValueError(f"{source}: its external data cannot be read ({exc}); keep the data file(s) beside "
                         "the graph, named by a relative location inside its folder (no symbolic link), or "
                         "embed them: onnx.save(onnx.load(path), path)") from None
    return model


def output_spec(foreign: ForeignGraph, request: ImportRequest) -> tuple[OutputSpec, str | None]:
    """The manifest's output, and the activation to add after the graph's answer (None: none)."""
    size, op = foreign.output_size, foreign.output_op
    if request.task != "classification":  # regression or forecast: numbers as the graph gives them
        return OutputSpec(kind="forecast", size=size, description=f"the graph's output "
                          f"{foreign.output.name!r} as it gives it ({size} value(s))"), None
    labels = request.labels
    if not labels:
        raise ValueError("--labels is required for classification: the class names, in output order")
    wanted = {"softmax": "Softmax", "sigmoid": "Sigmoid"}.get(request.output_activation)
    if request.output_activation == "auto" and op not in ("Softmax", "Sigmoid"):
        raise ValueError(f"output {foreign.output.name!r} is computed by {op}, not Softmax or Sigmoid: pass "
                         "--output-activation softmax (or sigmoid) if it gives logits, or none if it gives "
                         "probabilities already")
    if size == 1:
        if len(labels) != 2:
            raise ValueError(f"output {foreign.output.name!r} gives one value: a binary probability needs "
                             f"--labels with two names (negative, positive), got {labels}")
        positive = request.positive_label or labels[1]
        if positive not in labels:
            raise ValueError(f"--positive-label {positive!r} is not among --labels {labels}")
        return OutputSpec(kind="probability", size=1, labels=labels, positive_label=positive,
                          description=f"the probability of {positive!r} (the other class: 1 - it)"), wanted
    if len(labels) != size:
        raise ValueError(f"output {foreign.output.name!r} gives {size} values; --labels names {len(labels)}")
    return OutputSpec(kind="probabilities", size=size, labels=labels,
                      description="class probabilities in label order"), wanted


def _normalisation(foreign: ForeignGraph, request: ImportRequest) -> tuple[np.ndarray, np.ndarray]:
    features = foreign.features
    if (request.mean is None) != (request.std is None):
        raise ValueError("--mean and --std go together (the graph wants (x - mean) / std)")
    if request.mean is None or request.std is None:
        return np.zeros(features, np.float32), np.ones(features, np.float32)
    mean, std = np.asarray(request.mean, np.float32), np.asarray(request.std, np.float32)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):  # before (round 10): a NaN mean imported,
        # and onnxruntime's GRU turned the NaN inputs into finite answers: the same garbage for any input
        raise ValueError("--mean and --std must be finite numbers (no nan or inf)")
    if mean.shape != (features,) or std.shape != (features,):
        raise ValueError(f"--mean and --std need one number per feature ({features})")
    if (std <= 0).any():
        raise ValueError("--std must be positive for every feature")
    return mean, std


def _manifest(foreign: ForeignGraph, request: ImportRequest, graph: bytes, output: OutputSpec,
              mean: np.ndarray, std: np.ndarray, length: int, wiring: Wiring, refusal: str | None,
              diff: float, cases: list[tuple[int, int]], source_sha256: str, source_name: str,
              repository: Path) -> Manifest:
    proto = onnx.load_from_string(graph)
    state = StateSpec(size=sum(g.h_size for g in foreign.grus) if wiring.state else 0,
                      parts=[StatePart(name=f"{g.node.name or f'gru{i}'}.h", shape=[g.directions, g.hidden])
                             for i, g in enumerate(foreign.grus)] if wiring.state else [])
    features = request.features or [f"feature_{i}" for i in range(foreign.features)]
    if len(features) != foreign.features:
        raise ValueError(f"--features names {len(features)} feature(s); the graph takes {foreign.features}")
    fixed = foreign.fixed_length
    return Manifest(
        name=request.name, version=request.version or next_version(repository / request.name),
        task=request.task,
        inputs=InputSpec(features=features, min_length=fixed or 1,
                         max_length=fixed or request.max_length or max(256, 4 * length)),
        output=output, gru=foreign.gru, state=state,
        streaming=StreamingSpec(supported=refusal is None, reason=refusal),
        onnx=OnnxSpec(sha256=sha256_of(graph), opset=foreign.opset,
                      inputs=[_spec(v) for v in proto.graph.input],
                      outputs=[_spec(v) for v in proto.graph.output]),
        normalization=NormalizationSpec(window_scaling=False, feature_mean=mean.tolist(),
                                        feature_std=std.tolist(), target_mean=[0.0] * output.size,
                                        target_std=[1.0] * output.size),
        training=TrainingInfo(dataset=f"imported from {source_name} (trained elsewhere)",
                              max_train_length=length),
        parity=ParitySpec(max_abs_diff=diff, tolerance=TOLERANCE, cases=cases),
        checkpoint_sha256=source_sha256,
        created_at=datetime.now(UTC),
    )


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    dtypes: dict[int, str] = {TensorProto.FLOAT: "float32", TensorProto.INT32: "int32"}
    dtype = dtypes[value.type.tensor_type.elem_type]
    return TensorSpec(name=value.name, dtype=dtype, shape=dims(value))  # type: ignore[arg-type]


def _report(source: Path, foreign: ForeignGraph, manifest: Manifest, diff: float, notes: list[str]) -> str:
    gru = manifest.gru
    lines = [f"# Imported model: {manifest.name} version {manifest.version}", "",
             f"- from {source.name} (sha256 {manifest.checkpoint_sha256[:16]}…), ONNX opset {foreign.opset}",
             f"- {gru.num_layers} GRU node(s), hidden {gru.hidden_size}, "
             f"{'bidirectional' if gru.bidirectional else 'forward'}, linear_before_reset="
             f"{gru.linear_before_reset}, candidate {gru.activation}",
             f"- input {foreign.x.name!r} ({foreign.layout}), answer {foreign.output.name!r} "
             f"(computed by {foreign.output_op})",
             f"- wrapped graph vs the original on onnxruntime: max scaled diff {diff:.2e} over (batch, "
             f"length) cases {manifest.parity.cases}",
             *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)
