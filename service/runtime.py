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
from service.bundle import Manifest, load_bundle
from service.settings import Settings

log = logging.getLogger("gru_serve.runtime")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
GRAPH_OPTIMIZATION = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                      "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                      "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


class InferenceError(Exception):
    """onnxruntime failed on a request's inputs."""


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

    def load(self) -> None:
        started = time.perf_counter()
        self.manifest, graph = load_bundle(self.bundle_dir)
        choice = choose_providers(self.settings.execution_provider)
        if choice.warning:
            log.warning("%s/%s: %s", self.manifest.name, self.manifest.version, choice.warning)
            self.warnings.append(choice.warning)
        options = session_options(self.settings)
        self._session = ort.InferenceSession(graph, options, providers=choice.providers)
        self.provider = self._session.get_providers()[0]
        if choice.providers[0] == CUDA and self.provider != CUDA:
            self.warnings.append("CUDA execution provider failed to initialise; running on CPU")
            log.warning("%s: CUDA failed to initialise; running on CPU", self.manifest.name)
        self._warm_up()
        self.load_seconds = time.perf_counter() - started

    def _warm_up(self) -> None:
        """One real inference, so the first request does not pay for allocation and checks the graph runs."""
        steps = min(self.manifest.training.get("max_train_length", 8), self.manifest.inputs.max_length)
        self.predict(np.ones((1, steps, self.manifest.inputs.num_features), dtype=np.float32))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x: (B, T, F) float32 in raw units -> (B, O): probabilities or forecasts."""
        output, _ = self.run(x)
        return output

    def run(self, x: np.ndarray, h0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """x: (B, T, F), h0: (layers x directions, B, hidden) or zeros -> (output (B, O), h_n)."""
        gru = self.manifest.gru
        if h0 is None:
            h0 = np.zeros((gru.state_size, x.shape[0], gru.hidden_size), dtype=np.float32)
        started = time.perf_counter()
        try:
            output, h_n = self._session.run(None, {"x": x, "h0": h0})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"onnxruntime failed: {exc}") from exc
        labels = (self.manifest.name, str(self.manifest.version))
        metrics.COMPUTE_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(*labels).observe(x.shape[0])
        return output, h_n

    def predict_many(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Sequences of mixed lengths: one run per length, answers back in request order. Grouping
        (not padding) keeps every answer exactly what the sequence gets alone."""
        outputs = np.empty((len(sequences), self.manifest.output.size), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, seq in enumerate(sequences):
            by_length.setdefault(len(seq), []).append(i)
        for indices in by_length.values():
            outputs[indices] = self.predict(np.stack([sequences[i] for i in indices]))
        return outputs
