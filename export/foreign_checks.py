"""What an imported graph promises, found by running it on onnxruntime (`gru import`, importer.py): the
wrapped graph answers as the original; a padded batch answers each sequence as alone (else the bundle takes
no `lengths`); chunk after chunk with the carried state answers as the whole (else streaming is refused)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from export.foreign import ForeignGraph, Unsupported
from export.verify import TOLERANCE
from service.bundle import LENGTHS_INPUT, OUTPUT, STATE_INPUT, STATE_OUTPUT, X_INPUT


class Probe:
    """Random sequences through onnxruntime: the wrapped graph against the original and against itself."""

    def __init__(self, foreign: ForeignGraph, mean: np.ndarray, std: np.ndarray, activation: str | None,
                 length: int):
        self.foreign, self.mean, self.std, self.activation = foreign, mean, std, activation
        self.length = length

    def raw(self, batch: int, length: int, seed: int) -> np.ndarray:
        x = np.random.default_rng(seed).standard_normal((batch, length, self.foreign.features))
        return (x * self.std + self.mean).astype(np.float32)  # raw units: normalised, they look standard

    def cases(self) -> list[tuple[int, int]]:
        if self.foreign.fixed_length:
            return [(1, self.length), (5, self.length), (7, self.length)]
        longer = 2 * self.length + 3
        return [(1, self.length), (1, longer), (5, max(1, self.length // 2)), (3, 1), (7, longer)]

    def against_original(self, original: bytes, wrapped: bytes) -> tuple[float, list[tuple[int, int]]]:
        """The largest difference, scaled by max(1, |answer|), between the two graphs' answers."""
        theirs, ours = _session(original), _session(wrapped)
        worst = 0.0
        for batch, length in self.cases():
            x = self.raw(batch, length, seed=batch * 1000 + length)
            expected = theirs.run([self.foreign.output.name], self._original_feeds(theirs, x))[0]
            expected = _apply(self.activation, expected.astype(np.float64))
            if not np.isfinite(expected).all():
                raise Unsupported(non_finite_answers(self.foreign.model, batch, length))
            got = ours.run([OUTPUT], _feeds(ours, x))[0]
            gap = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
            # a NaN is a failure: max() over it kept the 0.0 before it (round 10: answers all NaN passed)
            worst = max(worst, float(np.where(np.isnan(gap), np.inf, gap).max()))
        if not worst <= TOLERANCE:
            raise Unsupported(f"the wrapped graph answers unlike the original (by {worst:.2e} > "
                              f"{TOLERANCE:g}); nothing was written")
        return worst, self.cases()

    def _original_feeds(self, session: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
        """The original's feeds: x normalised, in its layout; a GRU's own h0 zeros, its lengths full."""
        scaled = ((x - self.mean) / self.std).astype(np.float32)
        feeds = {self.foreign.x.name: scaled if self.foreign.layout == "btf" else scaled.transpose(1, 0, 2)}
        for value in session.get_inputs():
            if value.name in feeds:
                continue
            if value.type == "tensor(int32)":
                feeds[value.name] = np.full(x.shape[0], x.shape[1], np.int32)
            else:
                shape = [x.shape[0] if not isinstance(d, int) else d for d in value.shape]
                feeds[value.name] = np.zeros(shape, np.float32)
        return feeds

    def padded_vs_alone(self, wrapped: bytes) -> float:
        session = _session(wrapped)
        sizes = [self.length + 3, max(1, self.length // 3), max(1, self.length - 5), 1]
        sequences = [self.raw(1, n, seed=n)[0] for n in sizes]
        x = np.zeros((len(sizes), max(sizes), self.foreign.features), np.float32)
        for i, seq in enumerate(sequences):
            x[i, : len(seq)] = seq
        together = session.run([OUTPUT], _feeds(session, x, np.array(sizes, np.int32)))[0]
        alone = np.concatenate([session.run([OUTPUT], _feeds(session, s[None]))[0] for s in sequences])
        return float(np.abs(together - alone).max())

    def chunked_vs_whole(self, wrapped: bytes) -> float:
        session = _session(wrapped)
        x = self.raw(3, 2 * self.length + 3, seed=5)
        cuts = [0, max(1, self.length // 2), max(1, self.length // 2) + 1, x.shape[1]]
        size = next(v.shape[1] for v in session.get_inputs() if v.name == STATE_INPUT)
        state = np.zeros((3, size), np.float32)
        worst = 0.0
        for start, end in zip(cuts, cuts[1:], strict=False):
            feeds = _feeds(session, x[:, start:end])
            feeds[STATE_INPUT] = state
            answer, state = session.run([OUTPUT, STATE_OUTPUT], feeds)
            whole = session.run([OUTPUT], _feeds(session, x[:, :end]))[0]
            worst = max(worst, float(np.abs(answer - whole).max()))
        return worst


def non_finite_answers(model: onnx.ModelProto, batch: int, length: int) -> str:
    """Why a graph whose own answers hold NaN or infinity is refused, naming the weights that hold them.
    Before (round 10) such a graph was imported with "max scaled diff 0.0e+00" (NaN compared as no
    difference) and the service refused the bundle at load: the work was thrown away late."""
    bad = [t.name for t in model.graph.initializer
           if (a := numpy_helper.to_array(t)).dtype.kind == "f" and not np.isfinite(a).all()]
    cause = (f"initializer(s) {bad[:5]} hold NaN or infinity: re-export the model from weights that "
             "trained to finite values") if bad else "check the graph's weights and the --mean/--std given"
    return (f"the original graph answers NaN or infinity (batch {batch}, length {length}, inputs drawn "
            f"around --mean with --std); {cause}. Nothing was written")


def streaming_refusal(foreign: ForeignGraph, probe: Probe, graph: bytes) -> str | None:
    if foreign.gru.bidirectional:
        return ("it is bidirectional: its answer depends on the steps after each one, so a prefix cannot "
                "be answered from a carried state")
    if foreign.fixed_length:
        return f"the graph fixes the sequence length at {foreign.fixed_length}"
    chunked = probe.chunked_vs_whole(graph)
    if chunked > TOLERANCE:
        return (f"answers from chunks with the carried state differ from the whole sequence's by "
                f"{chunked:.2e}: the graph's answer depends on more than the GRU states it carries")
    return None


# onnxruntime's own exception types (none derives from another Python error), and MemoryError: what a
# graph it cannot load or run (an op it lacks, a shape it cannot take, memory it cannot get) raises.
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    t for t in vars(ort_errors).values() if isinstance(t, type) and issubclass(t, Exception)) + (MemoryError,)


@contextmanager
def onnxruntime_refusals() -> Iterator[None]:
    """A graph onnxruntime fails on is refused as any other graph is: one line saying why."""
    try:
        yield
    except ORT_ERRORS as exc:
        reason = " ".join(str(exc).split())[:500] or type(exc).__name__
        raise Unsupported(f"onnxruntime cannot run the graph: {reason}") from None


def _session(graph: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _feeds(session: ort.InferenceSession, x: np.ndarray, lengths: np.ndarray | None = None
           ) -> dict[str, np.ndarray]:
    """The contract's feeds: zero state (new sequences), every step valid unless `lengths`."""
    feeds = {X_INPUT: x}
    for value in session.get_inputs():
        if value.name == STATE_INPUT:
            feeds[STATE_INPUT] = np.zeros((len(x), value.shape[1]), np.float32)
        elif value.name == LENGTHS_INPUT:
            feeds[LENGTHS_INPUT] = lengths if lengths is not None else np.full(len(x), x.shape[1], np.int32)
    return feeds


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Softmax": lambda v: np.exp(v - v.max(-1, keepdims=True)) / np.exp(v - v.max(-1, keepdims=True)).sum(
        -1, keepdims=True),
    "Sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
}


def _apply(activation: str | None, values: np.ndarray) -> np.ndarray:
    return ACTIVATIONS[activation](values) if activation else values
