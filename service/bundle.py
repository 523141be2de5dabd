"""The model bundle contract: `models/<name>/<version>/{model.onnx, manifest.json}`.

The manifest schema lives here, with the consumer; `export/` imports it to write one. `read_manifest`
refuses a manifest that does not hold together, naming the field (graph_check.py `load_bundle`: one
whose graph disagrees).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.heads import HEADS, Head, OutputKind, Task, head_for

SCHEMA_VERSION = 3  # 3: one batch-major `state` [batch, S] in and `next_state` out (2 carried h0/h_n)

MANIFEST_FILE = "manifest.json"

# The graph's I/O names, declared once: export writes them, verification and the service read them.
X_INPUT = "x"  # float32 [batch, time, features], raw units (normalisation is inside the graph)
LENGTHS_INPUT = "lengths"  # int32 [batch]: valid steps per sequence; padded steps never reach an answer
STATE_INPUT = "state"  # float32 [batch, S]: everything a sequence carries between chunks; zeros = new
OUTPUT = "output"  # float32 [batch, O], or [batch, time, O] for tagging
STATE_OUTPUT = "next_state"  # float32 [batch, S]: the state after each sequence's last valid step
BATCH_AXIS, TIME_AXIS = "batch", "time"  # names of the dynamic axes
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# GET /v2/models/stats is the protocol's statistics of every model: a model so named would lose its metadata
RESERVED_NAMES = frozenset({"stats"})


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a model, or None if it can."""
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved (GET /v2/models/{name} is every model's statistics); choose another"
    if not NAME_PATTERN.fullmatch(name):
        return f"{name!r} must match {NAME_PATTERN.pattern}"
    return None
# The GRU candidate activations a bundle may hold (gru.activation) and ONNX's name for each: every GRU
# node's `activations` is [Sigmoid, <candidate>] per direction, ONNX's default alpha where there is one.
# onnxruntime's CPU GRU kernel runs each; its CUDA provider only tanh (others fall back to CPU).
ONNX_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid", "softsign": "Softsign",
                    "softplus": "Softplus", "elu": "Elu", "leaky_relu": "LeakyRelu"}
Activation = Literal["tanh", "relu", "sigmoid", "softsign", "softplus", "elu", "leaky_relu"]


class BundleError(Exception):
    """A bundle that cannot be served; the message names the file and field at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str  # the graph's input or output name
    dtype: Literal["float32", "int32", "int64"] = "float32"
    shape: list[int | str]  # ints are fixed; strings name dynamic axes ("batch", "time")


class OnnxSpec(_Strict):
    # The graph, beside the manifest. A *.onnx name: the repository checks those (symlinks leading out of
    # it, changed files) before the manifest is read.
    file: str = Field(default="model.onnx", pattern=r"^[^/\\]+\.onnx$")
    sha256: str  # of the graph file: a changed graph is refused
    opset: int  # ONNX opset the graph was exported with
    inputs: list[TensorSpec]  # x, state and lengths (a graph may lack lengths: then one length per run)
    outputs: list[TensorSpec]  # output and next_state


class GRUSpec(_Strict):
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(ge=1)
    bidirectional: bool  # a bidirectional model cannot stream
    linear_before_reset: Literal[0, 1] = Field(
        description="1: reset gate applied after the hidden matmul (torch.nn.GRU, cuDNN); "
        "0: before it (Cho et al. 2014)"
    )
    activation: Activation = Field(default="tanh", description="the candidate's: n = activation(...)")

    @property
    def directed_layers(self) -> int:
        """layers x directions: the GRU's h vectors (and its GRU nodes when exported one per direction)."""
        return self.num_layers * (2 if self.bidirectional else 1)

    @property
    def onnx_activations(self) -> list[str]:
        """Every GRU node's `activations` attribute: the gates' and the candidate's, per direction."""
        return ["Sigmoid", ONNX_ACTIVATIONS[self.activation]] * (2 if self.bidirectional else 1)


class StatePart(_Strict):
    """One piece of the packed state, in order: e.g. the GRU's h, (layers x directions, hidden)."""

    name: str
    shape: list[int] = Field(min_length=1)


class StateSpec(_Strict):
    """The per-sequence state vector: `size` floats, the concatenation of `parts` (row-major each).
    Clients treat it as opaque; the parts say what it holds."""

    size: int = Field(ge=0)
    parts: list[StatePart] = Field(default_factory=list)


class StreamingSpec(_Strict):
    supported: bool  # whether /stream and v2 sequences serve this model
    reason: str | None = None  # why not, when not supported


class TrainingInfo(_Strict):
    """What training knew that the service uses (warm-up length) or reports (metrics)."""

    dataset: str = ""  # what it was trained on
    seed: int | None = None
    best_epoch: int | None = None  # the epoch whose weights were exported
    test_metrics: dict[str, Any] = Field(default_factory=dict)  # as in the run's test_metrics.json
    max_train_length: int = Field(default=8, ge=1)  # longest training sequence: the warm-up length
    ragged: bool = False  # the training data held sequences of different lengths


class InputSpec(_Strict):
    features: list[str] = Field(min_length=1)  # one name per input feature, in order
    min_length: int = Field(default=1, ge=1)  # steps a request's sequence may have, at least
    max_length: int = Field(ge=1)  # and at most

    @property
    def num_features(self) -> int:
        return len(self.features)


class OutputSpec(_Strict):
    kind: OutputKind  # the head: head_for(task).kind
    size: int = Field(gt=0)  # values per answer (labels, or the forecast horizon)
    labels: list[str] | None = None  # classification and tagging
    positive_label: str | None = None  # kind "probability": the label whose probability the graph gives
    description: str  # what the output means, in words

    @model_validator(mode="after")
    def _binary_names_both_classes(self) -> OutputSpec:
        if self.kind == "probability" and (self.size != 1 or not self.labels or len(self.labels) != 2
                                           or self.positive_label not in self.labels):
            raise ValueError("kind 'probability' needs size 1, two labels and positive_label among them")
        return self

    @property
    def head(self) -> Head:
        return HEADS[self.kind]


class NormalizationSpec(_Strict):
    location: Literal["graph"] = "graph"  # applied inside model.onnx; the service adds nothing
    window_scaling: bool  # forecasting: each window scaled by its mean level (cannot stream)
    per_series: bool = False  # each series by its own mean and std, its log scale an extra input
    scale_feature: int | None = None  # the feature whose window mean scales it
    feature_mean: list[float]  # the training split's, per feature (applied in the graph)
    feature_std: list[float]
    target_mean: list[float]  # regression and forecasting: answers come back in original units
    target_std: list[float]


class ParitySpec(_Strict):
    """What export measured (export/verify.py), at the case nearest its tolerance."""

    max_abs_diff: float  # onnxruntime vs PyTorch (or vs the float64 GRU equations) there
    tolerance: float  # that case's tolerance: grows with sqrt(length) and the output's scale
    cases: list[tuple[int, int]]  # (batch, length) pairs checked against PyTorch
    worst_case: str = ""  # which output, against what, at which batch and length (ragged or not)
    accepted_failure: bool = False  # written by `gru export --accept-parity-error` over the tolerance


class Manifest(_Strict):
    schema_version: Literal[3] = 3  # SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN.pattern)
    version: int = Field(ge=1)
    task: Task
    inputs: InputSpec
    output: OutputSpec
    gru: GRUSpec
    state: StateSpec
    streaming: StreamingSpec
    onnx: OnnxSpec
    normalization: NormalizationSpec
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    parity: ParitySpec
    checkpoint_sha256: str  # of the training checkpoint it was exported from
    created_at: datetime

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @model_validator(mode="after")
    def _state_matches_io(self) -> Manifest:
        """The state's size, its parts and the graph's state tensors tell one story."""
        parts = sum(math.prod(p.shape) for p in self.state.parts)
        if self.state.parts and parts != self.state.size:
            raise ValueError(f"state.parts hold {parts} floats but state.size is {self.state.size}")
        expected = [BATCH_AXIS, self.state.size]
        for field, specs, name in (("onnx.inputs", self.onnx.inputs, STATE_INPUT),
                                   ("onnx.outputs", self.onnx.outputs, STATE_OUTPUT)):
            spec = next((t for t in specs if t.name == name), None)
            if self.state.size and (spec is None or spec.shape != expected):
                raise ValueError(f"{field} must hold {name!r} with shape {expected} (state.size)")
        if self.streaming.supported and not self.state.size:
            raise ValueError("streaming.supported needs a state (state.size > 0)")
        return self

    @model_validator(mode="after")
    def _sizes_match_io(self) -> Manifest:
        """inputs.features, output.size and output.labels count what x and output hold. Before (round 10),
        a manifest naming 4 labels for a graph of 3 probabilities served each answer with a label that
        had no probability, and 3 features for a graph of 2 failed at warm-up naming no field."""
        labelled = self.output.kind in ("probabilities", "step_probabilities")
        if labelled and len(self.output.labels or []) != self.output.size:
            raise ValueError(f"output.labels names {len(self.output.labels or [])} label(s) but output.size "
                             f"is {self.output.size}: one label per probability")
        for field, specs, name, count, what in (
                ("onnx.inputs", self.onnx.inputs, X_INPUT, self.inputs.num_features, "inputs.features names"),
                ("onnx.outputs", self.onnx.outputs, OUTPUT, self.output.size, "output.size is")):
            shape = next((t.shape for t in specs if t.name == name), None) or [""]
            if isinstance(shape[-1], int) and shape[-1] != count:
                raise ValueError(f"{what} {count} but {field} {name!r} has {shape[-1]} on its last axis "
                                 f"(shape {shape}): the manifest must describe its graph")
        return self

    @model_validator(mode="after")
    def _output_follows_task(self) -> Manifest:
        expected = head_for(self.task, binary=self.output.kind == "probability").kind
        if self.output.kind != expected:
            raise ValueError(f"output.kind {self.output.kind!r} does not fit task {self.task!r}: "
                             f"a {self.task} model's output is {expected!r}")
        return self

    @property
    def takes_lengths(self) -> bool:
        """The graph takes `lengths`: a padded batch of mixed lengths runs exactly in one go. A graph
        without it (e.g. imported) runs one length at a time."""
        return any(t.name == LENGTHS_INPUT for t in self.onnx.inputs)

    @property
    def streaming_refusal(self) -> str | None:
        """Why this model cannot answer chunk by chunk from a carried state, or None if it can."""
        return None if self.streaming.supported else (self.streaming.reason or "the bundle says so")


def sha256_of(source: bytes | Path) -> str:
    """The sha256 (hex) of bytes or of a file (read in blocks): the one hash of graphs and checkpoints."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle_file(path: Path, what: str) -> bytes:
    """The bytes of one bundle file. Only a regular file: a FIFO or a device in its place would block
    the read, and with it the repository (every load, unload and poll), for ever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO without a writer blocks too
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{path}: the {what} is not a regular file (a folder, FIFO or device?)")
    with open(fd, "rb") as handle:
        try:
            return handle.read()
        except OSError as exc:
            raise BundleError(f"{path}: cannot read the {what} ({exc.strerror})") from exc


def read_manifest(bundle_dir: Path) -> Manifest:
    path = bundle_dir / MANIFEST_FILE
    try:
        text = read_bundle_file(path, "manifest").decode()
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: the manifest is not UTF-8 text (byte {exc.start}); "
                          "re-export the bundle with `gru export`") from exc
    try:
        schema = json.loads(text).get("schema_version")
    except (ValueError, AttributeError, RecursionError):  # RecursionError: arrays nested 100,000 deep (round
        schema = None  # 10: the reason was that error alone, naming no file); pydantic's refusal names it
    if isinstance(schema, int) and schema < SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {schema} is from an older gru-serve (state as h0/h_n); "
                          f"re-export the checkpoint with `gru export` to get schema {SCHEMA_VERSION}")
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BundleError(f"{path}: invalid manifest: {problems}") from exc
