"""The seed's example (configs/seed_example.yaml: two ReLU-candidate GRU layers, one sigmoid probability)
trained small, exported and served: the native answer names both classes, v2 returns the [batch, 1]
tensor, and the ReLU model streams chunk by chunk as whole."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from export.bundle import export_checkpoint
from export.verify import TOLERANCE
from tests.helpers import Server
from training.config import load_config
from training.loop import fit

CONFIG = Path(__file__).parents[2] / "configs" / "seed_example.yaml"


@pytest.fixture(scope="module")
def seed_example(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("seed_example")
    run = fit(load_config(CONFIG, [f"run_dir={root / 'runs'}", "progress=false", "model.hidden_size=16",
                                   "optim.max_epochs=3", "optim.plots=false", "optim.tensorboard=false"]))
    result = export_checkpoint(run.checkpoint, root / "models", "seed_example")
    server = Server(root / "models").start()
    yield result, server
    server.stop()


def test_the_bundle_holds_the_examples_model(seed_example) -> None:
    result, _ = seed_example
    manifest = result.manifest
    gru, output = manifest.gru, manifest.output
    assert (gru.num_layers, gru.activation, gru.linear_before_reset) == (2, "relu", 1)
    assert (output.kind, output.size, output.labels, output.positive_label) == \
        ("probability", 1, ["1", "2"], "2")
    assert [t.shape for t in manifest.onnx.outputs][0] == ["batch", 1]
    assert manifest.parity.max_abs_diff <= TOLERANCE and manifest.streaming.supported


def test_the_native_answer_names_both_classes(seed_example) -> None:
    result, server = seed_example
    sequences = np.random.default_rng(0).normal(size=(3, 24)).round(3)
    body = httpx.post(f"{server.url}/models/seed_example/predict", json={"sequences": sequences.tolist()},
                      timeout=10).json()
    session = ort.InferenceSession(str(result.bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    x = sequences[:, :, None].astype(np.float32)
    p = session.run(["output"], {"x": x, "state": np.zeros((3, result.manifest.state.size), np.float32),
                                 "lengths": np.full(3, 24, np.int32)})[0][:, 0]
    assert body["labels"] == ["1", "2"]
    for answer, p_2 in zip(body["predictions"], p, strict=True):
        assert np.abs(np.array(answer["probabilities"]) - [1 - p_2, p_2]).max() <= TOLERANCE
        assert answer["label"] == ("2" if p_2 > 0.5 else "1")


def test_v2_returns_the_one_probability_tensor(seed_example) -> None:
    _, server = seed_example
    x = np.random.default_rng(1).normal(size=(2, 24, 1)).round(3)
    body = {"inputs": [{"name": "x", "shape": [2, 24, 1], "datatype": "FP32", "data": x.ravel().tolist()}],
            "outputs": [{"name": "output"}]}
    response = httpx.post(f"{server.url}/v2/models/seed_example/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    native = httpx.post(f"{server.url}/models/seed_example/predict", timeout=10,
                        json={"sequences": x[:, :, 0].tolist()}).json()["predictions"]
    assert output["shape"] == [2, 1]
    assert np.abs(np.array(output["data"]) - [a["probabilities"][1] for a in native]).max() <= TOLERANCE


def test_the_relu_model_streams_as_whole(seed_example) -> None:
    _, server = seed_example
    sequence = np.random.default_rng(2).normal(size=30).round(3).tolist()
    state = None
    for start, end in ((0, 9), (9, 10), (10, 30)):
        response = httpx.post(f"{server.url}/models/seed_example/stream", timeout=10,
                              json={"steps": sequence[start:end], "state": state})
        assert response.status_code == 200, response.text
        state = response.json()["state"]
    whole = httpx.post(f"{server.url}/models/seed_example/predict", json={"sequences": [sequence]},
                       timeout=10).json()["predictions"][0]
    streamed = response.json()["prediction"]
    assert streamed["label"] == whole["label"]
    assert np.abs(np.array(streamed["probabilities"]) - whole["probabilities"]).max() <= TOLERANCE
