"""One loaded model: an onnxruntime session on the chosen execution provider, warmed up, with
`load()` and `predict()` and nothing else public."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service import metrics
from service.bundle import LENGTHS_INPUT, OUTPUT, STATE_INPUT, STATE_OUTPUT, X_INPUT, Manifest
from service.graph_check import load_bundle
from service.settings import Settings

log = logging.getLogger("gru_serve.runtime")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
GRAPH_OPTIMIZATION = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                      "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                      "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


class InferenceError(Exception):
    """onnxruntime failed on a request's inputs."""


class NonFiniteOutput(InferenceError):
    """The graph computed NaN or infinity for these inputs (e.g. a window level that overflows float32):
    the request's fault, refused rather than answered with nulls."""


@dataclass
class ProviderChoice:
    providers: list[str]
    warning: str | None = None


def choose_providers(requested: str, available: list[str] | None = None) -> ProviderChoice:
    """cuda: CUDA first, CPU behind it; missing CUDA means CPU and a warning. auto: quietly the best."""
    available = ort.get_available_providers() if available is None else available
    if requested == "cpu":
        return ProviderChoice([CPU])
    if CUDA in available:
        return ProviderChoice([CUDA, CPU])
    if requested == "cuda":
        return ProviderChoice([CPU], f"CUDA execution provider requested but this onnxruntime build "
                                     f"offers only {available}; running on CPU")
    return ProviderChoice([CPU])


def session_options(settings: Settings) -> ort.SessionOptions:
    """Chosen by measurement (bench/inprocess.py): one intra-op thread is fastest for these GEMMs; no
    spinning, so idle pool threads (with more threads) leave the core to the event loop; full graph
    optimisation; the CPU memory arena on (reuses buffers between runs)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    spinning = "1" if settings.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.graph_optimization_level = GRAPH_OPTIMIZATION[settings.graph_optimization]
    options.enable_cpu_mem_arena = True
    return options


@dataclass
class ModelRuntime:
    bundle_dir: Path
    settings: Settings
    manifest: Manifest = field(init=False)
    provider: str = field(init=False, default="")
    warnings: list[str] = field(init=False, default_factory=list)
    load_seconds: float = field(init=False, default=0.0)
    _session: ort.InferenceSession = field(init=False, repr=False)
    _outputs: list[str] = field(init=False, repr=False, default_factory=list)
    _compute_seconds: metrics.Deferred = field(init=False, repr=False)
    _batch_size: metrics.Deferred = field(init=False, repr=False)

    def load(self) -> None:
        started = time.perf_counter()
        self.manifest, graph = load_bundle(self.bundle_dir)
        choice = choose_providers(self.settings.execution_provider)
        if choice.warning:
            log.warning("%s/%s: %s", self.manifest.name, self.manifest.version, choice.warning)
            self.warnings.append(choice.warning)
        labels = (self.manifest.name, str(self.manifest.version))
        self._compute_seconds = metrics.deferred(metrics.COMPUTE_SECONDS.labels(*labels))  # not per run
        self._batch_size = metrics.deferred(metrics.BATCH_SIZE.labels(*labels))
        options = session_options(self.settings)
        self._session = ort.InferenceSession(graph, options, providers=choice.providers)
        self._outputs = [OUTPUT, STATE_OUTPUT] if self.manifest.state.size else [OUTPUT]
        self.provider = self._session.get_providers()[0]
        if choice.providers[0] == CUDA and self.provider != CUDA:
            self.warnings.append("CUDA execution provider failed to initialise; running on CPU")
            log.warning("%s: CUDA failed to initialise; running on CPU", self.manifest.name)
        self._warm_up()
        self.load_seconds = time.perf_counter() - started

    def _warm_up(self) -> None:
        """One real inference, so the first request does not pay for allocation and checks the graph runs."""
        steps = min(self.manifest.training.max_train_length, self.manifest.inputs.max_length)
        self.predict(np.ones((1, steps, self.manifest.inputs.num_features), dtype=np.float32))

    def run(
        self, x: np.ndarray, lengths: np.ndarray | None = None, state: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One session run. x: (B, T, F) float32 raw units, zero-padded past `lengths` (B,) (None: all T
        steps valid); state: (B, S) carried state (None: zeros, new sequences). Returns the output and
        the next state (B, S)."""
        batch = x.shape[0]
        feeds = {X_INPUT: x}
        size = self.manifest.state.size  # floats of the packed state (0: the graph has none)
        if size:
            feeds[STATE_INPUT] = np.zeros((batch, size), np.float32) if state is None else state
        if self.manifest.takes_lengths:
            full = np.full(batch, x.shape[1], dtype=np.int32)
            feeds[LENGTHS_INPUT] = full if lengths is None else lengths.astype(np.int32, copy=False)
        elif lengths is not None and (lengths != x.shape[1]).any():
            raise InferenceError(f"{self.manifest.name}: this graph has no lengths input; padded batches "
                                 "must run one length at a time (service/batching.py plan_runs does)")
        started = time.perf_counter()
        try:
            results = self._session.run(self._outputs, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"onnxruntime failed: {exc}") from exc
        self._compute_seconds.observe(time.perf_counter() - started)
        self._batch_size.observe(batch)
        next_state = results[1] if size else np.zeros((batch, 0), np.float32)
        if not (np.isfinite(results[0]).all() and np.isfinite(next_state).all()):
            raise NonFiniteOutput(f"model {self.manifest.name!r} computes a value that is not finite for "
                                  "these inputs: they are too large (or too degenerate) for its float32 "
                                  "arithmetic; send values in the range the model was trained on")
        return results[0], next_state

    def predict(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """x: (B, T, F) float32 in raw units -> (B, O): probabilities or forecasts; tagging models give
        (B, T, O) per-step probabilities, zero past each sequence's length."""
        return self.run(x, lengths)[0]
