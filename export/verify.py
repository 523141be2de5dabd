"""Verification before anything is written: onnx.checker, I/O and GRU attributes, and onnxruntime vs
PyTorch (and vs the NumPy GRU equations in float64) at batch sizes and lengths other than the traced ones.

The parity tolerance comes from float32 arithmetic, not a fixed number. Two float32 implementations of
the same recurrence (PyTorch's kernels, onnxruntime's MLAS) round differently at every step; each step
adds rounding noise of a few eps32 (2^-23, the spacing of float32 numbers at 1) relative to the size of
the values, and the recurrence carries it forward. Measured on trained models (bench/export_matrix.py,
docs/results/quality.md), the difference grows with the number of steps about like a random walk,
sqrt(length), and saturates on long sequences where the GRU forgets; it scales with the output's size
(forecasts are in original units). So, per output and case:

    tolerance = PARITY_C * eps32 * sqrt(length) * max(1, max |reference output|)

PARITY_C is fitted on the export matrix (uni/bi x 1-3 layers x both reset variants x 100/500 epochs on
Airline and ItalyPowerDemand): the worst cell measured 0.50 of it (docs/results/quality.md). A real
export bug (a wrong linear_before_reset, lengths not wired, a weight off by 1e-3) differs by 1e-3 or more,
far above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.onnx import example_inputs
from service.bundle import LENGTHS_INPUT, STATE_INPUT, STATE_OUTPUT, X_INPUT, BundleError, GRUSpec, TensorSpec
from service.graph_check import check_gru_nodes, check_tensors
from training.frontend import FRONT_PARTS
from training.model import GRUModel
from training.reference import ResetMode, gru_forward

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-07
PARITY_C = 128.0  # fitted on the export matrix; see the module docstring
TOLERANCE = 1e-5  # for tests comparing runs of one graph (ragged vs alone, chunked vs whole) on tiny models


def parity_tolerance(length: int, scale: float) -> float:
    """How far two float32 computations of `length` steps may differ, for outputs of size `scale`."""
    return PARITY_C * EPS32 * math.sqrt(max(1, length)) * max(1.0, scale)


class VerificationError(ValueError):
    """The exported graph is not the trained model; nothing was written. A ValueError, so that `gru`
    prints it as one `error:` line (exit 2)."""


class ParityError(VerificationError):
    pass


@dataclass(frozen=True)
class CaseDiff:
    """One output of one case: the measured max |difference| and the tolerance it is held to."""

    output: str
    batch: int
    length: int
    ragged: bool
    diff: float
    scale: float  # max(1, max |reference|)
    tolerance: float

    @property
    def ratio(self) -> float:
        return self.diff / self.tolerance

    @property
    def where(self) -> str:
        return f"batch={self.batch}, length={self.length}{', ragged' if self.ragged else ''}"


@dataclass
class ParityReport:
    against: str  # "PyTorch" or "the NumPy GRU equations (float64)"
    cases: list[tuple[int, int]]  # each run with every sequence at full length, and ragged (batch > 1)
    rows: list[CaseDiff] = field(default_factory=list)

    @property
    def worst(self) -> CaseDiff:
        return max(self.rows, key=lambda r: r.ratio)

    @property
    def passed(self) -> bool:
        return self.worst.ratio <= 1.0

    @property
    def max_abs_diff(self) -> float:
        return max(r.diff for r in self.rows)

    def error(self) -> ParityError:
        w = self.worst
        return ParityError(
            f"output {w.output!r} differs from {self.against} by {w.diff:.3e} at {w.where}: over the "
            f"tolerance {w.tolerance:.3e} there ({PARITY_C:g} x eps32 x sqrt({w.length}) x output scale "
            f"{w.scale:.3g}). Nothing was written; --accept-parity-error writes the bundle anyway and "
            "records the difference in its manifest")


def check_structure(graph: bytes, gru: GRUSpec, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    proto = onnx.load_from_string(graph)
    try:
        onnx.checker.check_model(proto, full_check=True)
        check_tensors("inputs", inputs, proto.graph.input, "exported graph")
        check_tensors("outputs", outputs, proto.graph.output, "exported graph")
        check_gru_nodes(gru, proto, "exported graph", lengths_input=LENGTHS_INPUT in [i.name for i in inputs])
    except (onnx.checker.ValidationError, BundleError) as exc:
        raise VerificationError(str(exc)) from exc


def _case(output: str, batch: int, length: int, ragged: bool, got: np.ndarray, ref: np.ndarray) -> CaseDiff:
    gap = np.abs(got.astype(np.float64) - ref)
    diff = float(np.where(np.isnan(gap), np.inf, gap).max())  # a NaN on either side is a failure
    scale = max(1.0, float(np.abs(ref).max()))
    return CaseDiff(output, batch, length, ragged, diff, scale, parity_tolerance(length, scale))


def check_parity(
    graph: bytes, module: torch.nn.Module, model: GRUModel, cases: list[tuple[int, int]]
) -> ParityReport:
    """Run every (batch, length) case through PyTorch and onnxruntime, once at full length and once
    with ragged lengths (both read each sequence up to its length). A shape mismatch raises at once;
    the differences are measured on every case and judged by the caller (`report.passed`)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    report = ParityReport("PyTorch", list(cases))
    runs = [(b, t, False) for b, t in cases] + [(b, t, True) for b, t in cases if b > 1 and t > 1]
    for batch, length, ragged in runs:
        x, state, lengths = example_inputs(model, batch, length, ragged)
        with torch.no_grad():
            expected = [t.numpy() for t in module(x, state, lengths)]
        feeds = {X_INPUT: x.numpy(), STATE_INPUT: state.numpy(), LENGTHS_INPUT: lengths.numpy()}
        got = session.run(None, feeds)
        for name, ref, out in zip(names, expected, got, strict=True):
            if ref.shape != out.shape:
                raise ParityError(f"output {name!r}: shape {out.shape} != PyTorch {ref.shape} "
                                  f"at batch={batch}, length={length}{', ragged' * ragged}")
            report.rows.append(_case(name, batch, length, ragged, out, ref))
    return report


def check_reference(graph: bytes, model: GRUModel, cases: list[tuple[int, int]]) -> ParityReport:
    """The GRU's h in the graph's next state against the NumPy GRU equations (training/reference.py) in
    float64, with the reset-gate variant and candidate activation the model was trained with: an oracle
    independent of torch's GRU kernels. The h part of the state is its first part (GRUModel.state_parts);
    the GRU's input comes from the model's front end (its whole patches), and the carried state holds no
    unfinished patch."""
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    params = {k: v.detach().cpu().double().numpy() for k, v in model.gru_weights().items()}
    reset: ResetMode = "after" if model.config.reset == "after" else "before"
    report = ParityReport(f"the NumPy GRU equations (float64, reset {reset}, {model.config.activation} "
                          "candidate)", list(cases))
    name, shape = model.state_parts()[0]
    size = int(np.prod(shape))
    for batch, length in cases:
        x, state, lengths = example_inputs(model, batch, length)  # whole sequences: the oracle does not pad
        state = _without_unfinished_patch(model, state)
        h0 = state[:, :size].reshape(batch, *shape).transpose(0, 1).double().numpy()  # (L*D, B, H)
        with torch.no_grad():
            gru_input = model.gru_inputs(x).double().numpy()
        _, expected = gru_forward(gru_input, params, model.config.num_layers, model.config.bidirectional,
                                  h0, reset=reset, activation=model.config.activation)
        got = session.run([STATE_OUTPUT], {X_INPUT: x.numpy(), STATE_INPUT: state.numpy(),
                                           LENGTHS_INPUT: lengths.numpy()})[0]
        got = got[:, :size].reshape(batch, *shape).transpose(1, 0, 2)
        report.rows.append(_case(f"{STATE_OUTPUT} ({name})", batch, length, False, got, expected))
    return report


def _without_unfinished_patch(model: GRUModel, state: torch.Tensor) -> torch.Tensor:
    """The state of a stream at a patch boundary with nothing before it for the front end to read."""
    parts = model.unpack(state)
    for name in FRONT_PARTS:
        if name in parts:
            parts[name] = torch.zeros_like(parts[name])
    return model.pack(parts)
