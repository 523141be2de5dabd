"""In-process onnxruntime throughput (sequences/s): the compute ceiling the service is measured
against, and the session-option sweep that chose the service's defaults (`python -m bench.inprocess`)."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(model_onnx: Path, threads: int = 1, spinning: bool = True, level: str = "all",
            arena: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.enable_cpu_mem_arena = arena
    return ort.InferenceSession(str(model_onnx), options, providers=["CPUExecutionProvider"])


def sequences_per_second(predict: Callable[[np.ndarray], object], steps: int, features: int, batch: int,
                         seconds: float = 1.0) -> float:
    """predict: (B, T, F) float32 -> anything; how many sequences per second it gets through."""
    x = np.random.default_rng(0).standard_normal((batch, steps, features)).astype(np.float32)
    for _ in range(5):
        predict(x)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        predict(x)
        runs += 1
    return runs * batch / elapsed


Predict = Callable[[np.ndarray], object]


def session_predict(bundle: Path, sess: ort.InferenceSession) -> tuple[Predict, int, int]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    size = manifest["state"]["size"]

    def predict(x: np.ndarray) -> object:
        feeds = {"x": x, "state": np.zeros((len(x), size), np.float32),
                 "lengths": np.full(len(x), x.shape[1], np.int32)}  # every step valid
        return sess.run(None, feeds)

    return predict, manifest["training"]["max_train_length"], len(manifest["inputs"]["features"])


def sweep(bundle: Path, batches: tuple[int, ...] = (1, 64), seconds: float = 0.5) -> list[dict]:
    rows = []
    for threads, spinning, level, arena in itertools.product((1, 2), (True, False), ("basic", "all"),
                                                             (True, False)):
        if threads == 1 and not spinning:
            continue  # one thread has no pool to spin
        sess = session(bundle / "model.onnx", threads, spinning, level, arena)
        predict, steps, features = session_predict(bundle, sess)
        row = {"threads": threads, "spinning": spinning, "level": level, "arena": arena}
        for b in batches:
            row[f"batch{b}"] = round(sequences_per_second(predict, steps, features, b, seconds))
        rows.append(row)
        print(row, flush=True)
    return rows


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(path)
        sweep(Path(path))
