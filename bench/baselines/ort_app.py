"""Baseline: a plain FastAPI + pydantic + onnxruntime app, one request at a time (no batching).
Written the usual way (a pydantic body model, a sync route in the threadpool), with the service's
session options (one intra-op thread), so the comparison measures the request path, not ORT tuning.

    BENCH_MODELS=bench/results/work/models uvicorn bench.baselines.ort_app:app
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class PredictRequest(BaseModel):
    sequences: list[list[list[float]]]


class Model:
    def __init__(self, bundle: Path):
        self.manifest = json.loads((bundle / "manifest.json").read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(str(bundle / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.state_size = self.manifest["state"]["size"]


root = Path(os.environ.get("BENCH_MODELS", "bench/results/work/models"))
models = {d.name: Model(max(d.iterdir(), key=lambda p: int(p.name))) for d in root.iterdir() if d.is_dir()}
app = FastAPI()


@app.get("/health/ready")
def ready() -> dict:
    return {"ready": True}


@app.post("/models/{name}/predict")
def predict(name: str, request: PredictRequest) -> dict:
    model = models.get(name)
    if model is None:
        raise HTTPException(404, f"no model {name}")
    x = np.asarray(request.sequences, dtype=np.float32)
    state = np.zeros((len(x), model.state_size), np.float32)
    lengths = np.full(len(x), x.shape[1], np.int32)  # whole sequences: every step valid
    probs, _ = model.session.run(None, {"x": x, "state": state, "lengths": lengths})
    labels = model.manifest["output"]["labels"]
    return {"predictions": [{"label": labels[int(p.argmax())], "probabilities": p.tolist()} for p in probs]}
