"""checkpoint -> verified bundle, written atomically: a temporary folder in the repository, renamed
into place only after every check passed. A crash or full disk never leaves a half-written bundle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import onnx

from export.onnx import OPSET, gru_spec, io_specs, state_spec, to_onnx
from export.report import write_bundle_report
from export.verify import ParityReport, check_parity, check_reference, check_structure
from export.wrapper import InferenceModule
from service.bundle import (
    MANIFEST_FILE,
    BundleError,
    GRUSpec,
    InputSpec,
    Manifest,
    NormalizationSpec,
    OnnxSpec,
    OutputSpec,
    ParitySpec,
    StreamingSpec,
    TrainingInfo,
    name_problem,
    sha256_of,
)
from service.graph_check import check_self_contained
from training.checkpoint import Checkpoint
from training.model import GRUModel
from training.publish import publish_folder

CHECKED_STEPS = 4096  # longest traced and checked length: a 1,000,000-step test recording took 24 GB


@dataclass
class ExportResult:
    bundle_dir: Path
    manifest: Manifest
    parity: ParityReport  # onnxruntime vs PyTorch
    reference: ParityReport  # the GRU's h vs the NumPy GRU equations (training/reference.py)


def export_checkpoint(
    checkpoint: Path, repository: Path, name: str, version: int | None = None,
    max_length: int | None = None, overwrite: bool = False, accept_parity_error: bool = False,
) -> ExportResult:
    """`accept_parity_error`: write the bundle even when a difference is over its tolerance (the
    manifest then says so); otherwise that raises ParityError and nothing is written."""
    if problem := name_problem(name):
        raise ValueError(f"model name {problem}")
    trained = Checkpoint.load(checkpoint)
    if trained.config.model.cell != "gru":
        raise ValueError(f"{checkpoint} holds an {trained.config.model.cell.upper()} (model.cell="
                         f"{trained.config.model.cell}), trained for the GRU-vs-LSTM comparison only; "
                         "bundles hold GRUs: train with model.cell=gru")
    model = trained.model()
    train_length = trained.max_train_length
    max_length = max_length or max(256, 4 * train_length)
    module = InferenceModule(model)
    checked = min(train_length, CHECKED_STEPS)
    graph = to_onnx(module, model, trace_batch=2, trace_length=checked)
    gru = gru_spec(model.config)
    inputs, outputs = io_specs(model)
    check_structure(graph, gru, inputs, outputs)
    cases = parity_cases(checked, max_length)
    reports = check_parity(graph, module, model, cases), check_reference(graph, model, cases)
    for report in reports:
        if not (report.passed or accept_parity_error):
            raise report.error()
    version = version or next_version(repository / name)
    manifest = _manifest(trained, model, gru, graph, reports, name, version, max_length,
                         checkpoint_sha256=sha256_of(Path(checkpoint)))
    extras = write_bundle_report(checkpoint.parent, manifest, reports[1].max_abs_diff)
    bundle_dir = write_bundle(repository, manifest, graph, overwrite, extras)
    return ExportResult(bundle_dir, manifest, *reports)


def parity_cases(train_length: int, max_length: int) -> list[tuple[int, int]]:
    """Batch sizes and lengths other than the traced (2, train_length): batch 1, a length longer than
    any training sequence, a short one, and a single step."""
    longer = min(max_length, 2 * train_length + 3)
    return [(1, train_length), (1, longer), (5, max(1, train_length // 2)), (3, 1), (7, longer)]


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _manifest(
    trained: Checkpoint, model: GRUModel, gru: GRUSpec, graph: bytes,
    reports: tuple[ParityReport, ParityReport],
    name: str, version: int, max_length: int, checkpoint_sha256: str,
) -> Manifest:
    inputs, outputs = io_specs(model)
    refusal = model.streaming_refusal()
    return Manifest(
        name=name, version=version, task=model.config.task,
        inputs=InputSpec(features=trained.feature_names, max_length=max_length,
                         min_length=_min_length(model, trained, refusal)),
        output=_output_spec(model, trained),
        gru=gru,
        state=state_spec(model),
        streaming=StreamingSpec(supported=refusal is None, reason=refusal),
        onnx=OnnxSpec(sha256=sha256_of(graph), opset=OPSET, inputs=inputs, outputs=outputs),
        normalization=NormalizationSpec(**trained.preprocessing),
        training=TrainingInfo(
            dataset=trained.data_source, seed=trained.config.optim.seed, best_epoch=trained.epoch,
            test_metrics=trained.test_metrics, max_train_length=trained.max_train_length,
            ragged=trained.ragged,
        ),
        parity=_parity_spec(*reports),
        checkpoint_sha256=checkpoint_sha256,
        created_at=datetime.now(UTC),
    )


def _min_length(model: GRUModel, trained: Checkpoint, streaming_refusal: str | None) -> int:
    """A forecaster that does not stream reads a window: fewer steps than its training windows are
    refused. Before, they were answered from what it never learnt (3 monthly values to a period-12 model
    gave its first value ten times over). One that streams answers after every chunk, as it reads."""
    if model.config.task == "forecast" and streaming_refusal is not None:
        return trained.min_train_length
    return 1


def _parity_spec(parity: ParityReport, reference: ParityReport) -> ParitySpec:
    """The case nearest its tolerance, over both checks."""
    report = max(parity, reference, key=lambda r: r.worst.ratio)
    worst = report.worst
    return ParitySpec(max_abs_diff=worst.diff, tolerance=worst.tolerance, cases=parity.cases,
                      worst_case=f"output {worst.output!r} vs {report.against} at {worst.where}",
                      accepted_failure=not report.passed)


def _output_spec(model: GRUModel, trained: Checkpoint) -> OutputSpec:
    task, size, labels = model.config.task, model.config.output_size, trained.label_names
    kind = model.task_head.kind
    if kind == "probability":
        return OutputSpec(kind=kind, size=1, labels=labels, positive_label=labels[1],
                          description=f"the probability of {labels[1]!r} (of {labels[0]!r}: 1 - it)")
    descriptions = {
        "classification": "class probabilities in label order",
        "tagging": "per time step: class probabilities in label order (zero past each sequence's length)",
        "forecast": f"the next {size} values of {trained.feature_names[0]!r}, in original units",
        "regression": f"{size} regression target(s) per sequence, in original units"}
    return OutputSpec(kind=kind, size=size, labels=None if model.task_head.values else labels,
                      description=descriptions[task])


def write_bundle(
    repository: Path, manifest: Manifest, graph: bytes, overwrite: bool = False,
    extras: dict[str, bytes] | None = None,
) -> Path:
    """`extras`: more files for the bundle folder (report.md, plots); the service reads only the
    manifest and the graph it names."""
    final = repository / manifest.name / str(manifest.version)
    try:  # the service's own check: what it would refuse is never written
        check_self_contained(onnx.load_from_string(graph), f"{manifest.name}/{manifest.version}/"
                             f"{manifest.onnx.file}")
    except BundleError as exc:
        raise ValueError(str(exc)) from None
    if final.exists() and not overwrite:
        raise FileExistsError(f"bundle {final} already exists; pick another --version or pass --overwrite")
    files = {manifest.onnx.file: graph, MANIFEST_FILE: manifest.to_json().encode(), **(extras or {})}
    return publish_folder(final, files)
