"""The model bundle contract: `models/<name>/<version>/{model.onnx, manifest.json}`.

The manifest schema lives here, with the consumer; `export/` imports it to write one. `load_bundle`
refuses a bundle whose manifest and graph disagree, naming the field.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 2  # 2 adds the `lengths` graph input and the tagging task; 1 still loads
LENGTHS_INPUT = "lengths"  # int32 [batch]: valid steps per sequence, wired into every GRU's sequence_lens
MANIFEST_FILE = "manifest.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class BundleError(Exception):
    """A bundle that cannot be served; the message names the file and field at fault."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: Literal["float32", "int32", "int64"] = "float32"
    shape: list[int | str]  # ints are fixed; strings name dynamic axes ("batch", "time")


class OnnxSpec(_Strict):
    file: str = "model.onnx"
    sha256: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class GRUSpec(_Strict):
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(ge=1)
    bidirectional: bool
    linear_before_reset: Literal[0, 1] = Field(
        description="1: reset gate applied after the hidden matmul (torch.nn.GRU, cuDNN); "
        "0: before it (Cho et al. 2014)"
    )

    @property
    def state_size(self) -> int:
        return self.num_layers * (2 if self.bidirectional else 1)


class InputSpec(_Strict):
    features: list[str] = Field(min_length=1)
    min_length: int = Field(default=1, ge=1)
    max_length: int = Field(ge=1)

    @property
    def num_features(self) -> int:
        return len(self.features)


class OutputSpec(_Strict):
    kind: Literal["probabilities", "forecast", "step_probabilities"]  # step_: [batch, time, labels]
    size: int = Field(gt=0)
    labels: list[str] | None = None  # classification and tagging
    description: str


class NormalizationSpec(_Strict):
    location: Literal["graph"] = "graph"  # applied inside model.onnx; the service adds nothing
    window_scaling: bool
    scale_feature: int | None = None
    feature_mean: list[float]
    feature_std: list[float]
    target_mean: list[float]
    target_std: list[float]


class ParitySpec(_Strict):
    max_abs_diff: float
    tolerance: float
    cases: list[tuple[int, int]]  # (batch, length) pairs checked against PyTorch


class Manifest(_Strict):
    schema_version: Literal[1, 2] = 2  # SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN.pattern)
    version: int = Field(ge=1)
    task: Literal["classification", "regression", "tagging"]
    inputs: InputSpec
    output: OutputSpec
    gru: GRUSpec
    onnx: OnnxSpec
    normalization: NormalizationSpec
    training: dict[str, Any] = Field(default_factory=dict)  # dataset, seed, test metrics
    parity: ParitySpec
    checkpoint_sha256: str
    created_at: datetime

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @property
    def takes_lengths(self) -> bool:
        """A padded batch of mixed lengths runs exactly in one go (schema 2); schema 1 graphs do not."""
        return any(t.name == LENGTHS_INPUT for t in self.onnx.inputs)

    @property
    def streaming_refusal(self) -> str | None:
        """Why this model cannot answer chunk by chunk from a carried state, or None if it can."""
        if self.gru.bidirectional:
            return ("it is bidirectional: its answer depends on the steps after each one, so a prefix "
                    "cannot be answered from a carried state")
        if self.normalization.window_scaling:
            return ("its inputs are scaled by the mean of the whole window, which is not known until "
                    "the window ends")
        return None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(bundle_dir: Path) -> Manifest:
    path = bundle_dir / MANIFEST_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the manifest ({exc.strerror})") from exc
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BundleError(f"{path}: invalid manifest: {problems}") from exc


def load_bundle(bundle_dir: Path) -> tuple[Manifest, bytes]:
    """Read and cross-check a bundle; return its manifest and the graph bytes for onnxruntime."""
    from service.graph_check import check_graph

    manifest = read_manifest(bundle_dir)
    where = f"{bundle_dir / MANIFEST_FILE}"
    if manifest.name != bundle_dir.parent.name or str(manifest.version) != bundle_dir.name:
        raise BundleError(
            f"{where}: name/version say {manifest.name}/{manifest.version} but the bundle sits in "
            f"{bundle_dir.parent.name}/{bundle_dir.name}"
        )
    graph_path = bundle_dir / manifest.onnx.file
    if graph_path.parent != bundle_dir:
        raise BundleError(f"{where}: onnx.file must be a file name inside the bundle folder")
    try:
        graph = graph_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{graph_path}: cannot read the graph ({exc.strerror})") from exc
    if hashlib.sha256(graph).hexdigest() != manifest.onnx.sha256:
        raise BundleError(f"{where}: onnx.sha256 does not match {graph_path.name} (corrupt or replaced)")
    check_graph(manifest, graph, where)
    return manifest, graph
