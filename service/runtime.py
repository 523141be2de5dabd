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
from service.bundle import LENGTHS_INPUT, Manifest, load_bundle
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

    def run(
        self, x: np.ndarray, lengths: np.ndarray | None = None, h0: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One session run. x: (B, T, F) float32 raw units, zero-padded past `lengths` (B,) (None: all T
        steps valid); h0: (L*D, B, H) carried state (None: zeros). Returns output and h_n."""
        gru = self.manifest.gru
        if h0 is None:
            h0 = np.zeros((gru.state_size, x.shape[0], gru.hidden_size), dtype=np.float32)
        feeds = {"x": x, "h0": h0}
        if self.manifest.takes_lengths:
            full = np.full(x.shape[0], x.shape[1], dtype=np.int32)
            feeds[LENGTHS_INPUT] = full if lengths is None else lengths.astype(np.int32, copy=False)
        elif lengths is not None and (lengths != x.shape[1]).any():
            raise InferenceError(f"{self.manifest.name}: this bundle (schema 1) has no lengths input; "
                                 "re-export it to run padded batches")
        started = time.perf_counter()
        try:
            output, h_n = self._session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"onnxruntime failed: {exc}") from exc
        labels = (self.manifest.name, str(self.manifest.version))
        metrics.COMPUTE_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(*labels).observe(x.shape[0])
        return output, h_n

    def predict(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """x: (B, T, F) float32 in raw units -> (B, O): probabilities or forecasts; tagging models give
        (B, T, O) per-step probabilities, zero past each sequence's length."""
        return self.run(x, lengths)[0]

    def predict_many(self, sequences: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Sequences of mixed lengths, answers back in request order: (N, O), or for tagging a list of
        (T_i, O) arrays. Every answer is exactly what the sequence gets alone: one padded run whose
        GRUs stop at each sequence's length (sequence_lens), or one run per length for schema-1
        bundles without a lengths input."""
        if self.manifest.takes_lengths:
            x, lengths = pad_batch(sequences)
            outputs = self.predict(x, lengths)
        else:
            outputs = self._predict_grouped(sequences)
        if self.manifest.task == "tagging":
            return [outputs[i, : len(seq)] for i, seq in enumerate(sequences)]
        return outputs

    def _predict_grouped(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Schema 1 (never tagging): one run per length, so no padding is needed."""
        outputs = np.empty((len(sequences), self.manifest.output.size), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, seq in enumerate(sequences):
            by_length.setdefault(len(seq), []).append(i)
        for indices in by_length.values():
            outputs[indices] = self.predict(np.stack([sequences[i] for i in indices]))
        return outputs

    def step(
        self, chunks: list[np.ndarray], states: list[np.ndarray | None]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Streaming: each chunk (T_i, F) continues its sequence from `states[i]` (L*D, H) (None: a new
        sequence); chunks of different sequences share one padded run. Returns, per chunk, the answer
        for the whole prefix so far (tagging: for the chunk's steps) and the new state (L*D, H)."""
        gru = self.manifest.gru
        x, lengths = pad_batch(chunks)
        if not self.manifest.takes_lengths and (lengths != x.shape[1]).any():  # schema 1: one at a time
            return [self.step([c], [s])[0] for c, s in zip(chunks, states, strict=True)]
        h0 = np.zeros((gru.state_size, len(chunks), gru.hidden_size), dtype=np.float32)
        for i, state in enumerate(states):
            if state is not None:
                h0[:, i] = state
        output, h_n = self.run(x, lengths, h0)
        per_step = self.manifest.task == "tagging"
        return [(output[i, : len(c)] if per_step else output[i], h_n[:, i].copy())
                for i, c in enumerate(chunks)]


def pad_batch(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(T_i, F) arrays -> zero-padded (B, max T, F) float32 and (B,) int32 lengths."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    steps = int(lengths.max())
    if (lengths == steps).all():
        return np.stack(sequences), lengths
    x = np.zeros((len(sequences), steps, sequences[0].shape[1]), dtype=np.float32)
    for i, seq in enumerate(sequences):
        x[i, : len(seq)] = seq
    return x, lengths
