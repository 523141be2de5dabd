"""Verification before anything is written: onnx.checker, I/O and GRU attributes, and onnxruntime vs
PyTorch at batch sizes and lengths other than the traced ones. Failures raise specific errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.onnx import example_inputs
from service.bundle import LENGTHS_INPUT, STATE_INPUT, STATE_OUTPUT, X_INPUT, BundleError, GRUSpec, TensorSpec
from service.graph_check import check_gru_nodes, check_tensors
from training.model import GRUModel
from training.reference import ResetMode, gru_forward

TOLERANCE = 1e-5


class VerificationError(Exception):
    """The exported graph is not the trained model; nothing was written."""


class ParityError(VerificationError):
    pass


@dataclass
class ParityReport:
    max_abs_diff: float  # raw difference over all outputs and cases
    max_scaled_diff: float  # |diff| / max(1, |reference|): what the tolerance applies to
    cases: list[tuple[int, int]]  # each run with every sequence at full length, and ragged (batch > 1)


def check_structure(graph: bytes, gru: GRUSpec, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    proto = onnx.load_from_string(graph)
    try:
        onnx.checker.check_model(proto, full_check=True)
        check_tensors("inputs", inputs, proto.graph.input, "exported graph")
        check_tensors("outputs", outputs, proto.graph.output, "exported graph")
        check_gru_nodes(gru, proto, "exported graph", lengths_input=LENGTHS_INPUT in [i.name for i in inputs])
    except (onnx.checker.ValidationError, BundleError) as exc:
        raise VerificationError(str(exc)) from exc


def check_parity(
    graph: bytes, module: torch.nn.Module, model: GRUModel,
    cases: list[tuple[int, int]], tolerance: float = TOLERANCE,
) -> ParityReport:
    """Run every (batch, length) case through PyTorch and onnxruntime, once at full length and once
    with ragged lengths (PyTorch packs, the graph uses sequence_lens); raise on the first miss."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst_abs = worst_scaled = 0.0
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
                                  f"at batch={batch}, length={length}{' (ragged)' * ragged}")
            diff = np.abs(out.astype(np.float64) - ref)
            scaled = float((diff / np.maximum(1.0, np.abs(ref))).max())
            worst_abs, worst_scaled = max(worst_abs, float(diff.max())), max(worst_scaled, scaled)
            if not scaled <= tolerance:
                raise ParityError(f"output {name!r} differs from PyTorch by {diff.max():.3e} "
                                  f"(> {tolerance:g}) at batch={batch}, length={length}"
                                  f"{' (ragged)' * ragged}")
    return ParityReport(worst_abs, worst_scaled, list(cases))


def check_reference(
    graph: bytes, model: GRUModel, cases: list[tuple[int, int]], tolerance: float = TOLERANCE
) -> float:
    """The GRU's h in the graph's next state against the NumPy GRU equations (training/reference.py) in
    float64, with the reset-gate variant and candidate activation the model was trained with: an oracle
    independent of torch's GRU kernels. The h part of the state is its first part (GRUModel.state_parts)."""
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    params = {k: v.detach().cpu().double().numpy() for k, v in model.gru.state_dict().items()}
    reset: ResetMode = "after" if model.config.reset == "after" else "before"
    worst = 0.0
    for batch, length in cases:
        x, state, lengths = example_inputs(model, batch, length)  # whole sequences: the oracle does not pad
        name, shape = model.state_parts()[0]
        size = int(np.prod(shape))
        h0 = state[:, :size].reshape(batch, *shape).transpose(0, 1).double().numpy()  # (L*D, B, H)
        with torch.no_grad():
            gru_input = model.normaliser.inputs(x, model.normaliser.level(x)).double().numpy()
        _, expected = gru_forward(gru_input, params, model.config.num_layers, model.config.bidirectional,
                                  h0, reset=reset, activation=model.config.activation)
        got = session.run([STATE_OUTPUT], {X_INPUT: x.numpy(), STATE_INPUT: state.numpy(),
                                           LENGTHS_INPUT: lengths.numpy()})[0]
        got = got[:, :size].reshape(batch, *shape).transpose(1, 0, 2)
        diff = float(np.abs(got - expected).max())
        worst = max(worst, diff)
        if not diff <= tolerance:
            raise ParityError(f"{name} differs from the NumPy reference GRU (reset {reset}, "
                              f"{model.config.activation} candidate) by {diff:.3e} "
                              f"(> {tolerance:g}) at batch={batch}, length={length}")
    return worst
