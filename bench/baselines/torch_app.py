"""Baseline: a plain FastAPI + pydantic + PyTorch eager app, one request at a time (no batching),
one torch thread (fastest for these sizes), inference mode.

    BENCH_RUNS=bench/results/work/runs uvicorn bench.baselines.torch_app:app
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from training.checkpoint import Checkpoint


class PredictRequest(BaseModel):
    sequences: list[list[list[float]]]


torch.set_num_threads(1)
root = Path(os.environ.get("BENCH_RUNS", "bench/results/work/runs"))
models = {}
for run in root.iterdir():
    checkpoint = Checkpoint.load(run / "checkpoint.pt")
    models[run.name] = (checkpoint.model(), [str(n) for n in checkpoint.label_names])
app = FastAPI()


@app.get("/health/ready")
def ready() -> dict:
    return {"ready": True}


@app.post("/models/{name}/predict")
def predict(name: str, request: PredictRequest) -> dict:
    if name not in models:
        raise HTTPException(404, f"no model {name}")
    model, labels = models[name]
    with torch.inference_mode():
        probs, _ = model.predict(torch.tensor(request.sequences, dtype=torch.float32))
    return {"predictions": [{"label": labels[int(p.argmax())], "probabilities": p.tolist()} for p in probs]}
