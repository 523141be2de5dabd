"""Dynamic batching end to end: concurrent clients against a real `gru serve` process."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from tests.helpers import Server


def _post(url: str, sequences: list) -> httpx.Response:
    return httpx.post(f"{url}/models/italy/predict", content=json.dumps({"sequences": sequences}),
                      headers={"content-type": "application/json"}, timeout=30)


def test_concurrent_mixed_lengths_equal_each_sequence_alone(server, repository: Path) -> None:
    rng = np.random.default_rng(7)
    requests = [[rng.standard_normal(int(rng.integers(1, 80))).round(4).tolist()
                 for _ in range(int(k % 3) + 1)] for k in range(120)]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda seqs: _post(server.url, seqs), requests))
    session = ort.InferenceSession(str(repository / "italy" / "1" / "model.onnx"))
    for seqs, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        got = np.array([p["probabilities"] for p in response.json()["predictions"]])
        alone = np.concatenate([session.run(None, {"x": np.array(s, np.float32).reshape(1, -1, 1),
                                                   "state": np.zeros((1, 16), np.float32),
                                                   "lengths": np.array([len(s)], np.int32)})[0]
                                for s in seqs])
        assert got.shape == alone.shape and np.abs(got - alone).max() <= 1e-5


def test_full_queue_answers_503_with_retry_after(repository: Path) -> None:
    # A one-sequence queue, and a batcher that, once busy, waits a second to fill its next batch:
    # while a request waits there, the others find the queue full.
    server = Server(repository, GRU_MAX_QUEUE_SIZE="1", GRU_MAX_QUEUE_DELAY_MS="1000").start()
    try:
        sequence = [[0.1 * k for k in range(24)]]
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: _post(server.url, sequence), range(32)))
        refused = [r for r in responses if r.status_code == 503]
        assert refused, "no request was refused with a one-sequence queue"
        assert {r.status_code for r in responses} == {200, 503}
        assert refused[0].headers["retry-after"] == "1"
        error = refused[0].json()["error"]
        assert error["code"] == "queue_full" and "GRU_MAX_QUEUE_SIZE" in error["message"]
        assert _post(server.url, sequence).status_code == 200  # and it recovers
        assert httpx.get(f"{server.url}/health/ready").status_code == 200
    finally:
        server.stop()
