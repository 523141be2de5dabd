"""End to end: tiny real models trained and exported, `gru serve` as a separate process on loopback,
HTTP answers compared with in-process onnxruntime and PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.bundle import read_manifest
from service.client import predict
from training.checkpoint import Checkpoint
from training.config import DataConfig
from training.data import load_data


def _bundle(repository: Path, name: str) -> Path:
    return repository / name / "1"


def _post(server, name: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kwargs.pop("headers", {"content-type": "application/json"})
    return httpx.post(f"{server.url}/models/{name}/predict", content=content, headers=headers, timeout=10)


def test_health_models_and_docs(server) -> None:
    assert httpx.get(f"{server.url}/health/live").json() == {"status": "alive"}
    ready = httpx.get(f"{server.url}/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["airline", "italy"]
    names = {m["name"]: m for m in httpx.get(f"{server.url}/models").json()["models"]}
    assert names["italy"]["task"] == "classification" and names["italy"]["provider"] == "CPUExecutionProvider"
    meta = httpx.get(f"{server.url}/models/italy").json()
    assert meta["inputs"]["num_features"] == 1 and meta["output"]["labels"] == ["1", "2"]
    assert meta["gru"]["linear_before_reset"] == 1 and meta["warnings"] == []
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/models/italy/predict" in schema["paths"]  # one operation per loaded model
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_head_answers_every_get_route_with_its_headers_and_no_body(server) -> None:
    for path in ("/health/ready", "/health/live", "/v2/health/ready", "/models/italy", "/v2", "/metrics"):
        got, head = httpx.get(f"{server.url}{path}"), httpx.head(f"{server.url}{path}")
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert httpx.head(f"{server.url}/models/nope").status_code == 404
    refused = httpx.head(f"{server.url}/v2/repository/models/italy/load")  # a POST-only route
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    assert httpx.get(f"{server.url}/health/live").json() == {"status": "alive"}  # the connection still serves


def test_classification_matches_onnxruntime_and_pytorch(server, repository, italy_run) -> None:
    X = load_data(DataConfig(dataset="ItalyPowerDemand")).test.X[:50]
    response = _post(server, "italy", {"sequences": X.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    probs = np.array([p["probabilities"] for p in body["predictions"]])
    session = ort.InferenceSession(str(_bundle(repository, "italy") / "model.onnx"))
    lengths = np.full(len(X), X.shape[1], dtype=np.int32)
    state = np.zeros((50, read_manifest(_bundle(repository, "italy")).state.size), np.float32)
    expected, _ = session.run(None, {"x": X, "state": state, "lengths": lengths})
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    with torch.no_grad():
        model = Checkpoint.load(italy_run.checkpoint).model()
        torch_probs, _ = model.predict(torch.as_tensor(X))
    np.testing.assert_allclose(probs, torch_probs.numpy(), atol=1e-5)
    assert [p["label"] for p in body["predictions"]] == [body["labels"][k] for k in probs.argmax(1)]


def test_forecast_in_original_units_and_mixed_lengths(server, airline_run) -> None:
    series = load_data(DataConfig(dataset="Airline")).test.X[0, :, 0]
    longer = np.concatenate([series[:12], series])  # a forecaster that does not stream reads >= its window
    sequences = [series.tolist(), longer.tolist(), series.tolist()]
    body = _post(server, "airline", {"sequences": sequences}).json()
    forecasts = np.array([p["forecast"] for p in body["predictions"]])
    model = Checkpoint.load(airline_run.checkpoint).model()
    for seq, got in zip(sequences, forecasts, strict=True):
        with torch.no_grad():
            alone, _ = model.predict(torch.tensor(seq).reshape(1, -1, 1))
        np.testing.assert_allclose(got, alone.numpy()[0], rtol=1e-5, atol=1e-4)
    assert forecasts.shape == (3, 12) and forecasts.min() > 100


BAD_INPUTS = [
    ("wrong feature count", {"sequences": [[[1.0, 2.0]]]}, 422, "sequences[0]", "feature"),
    ("empty sequence", {"sequences": [[]]}, 422, "sequences[0]", "empty"),
    ("too long", {"sequences": [[0.1] * 5000]}, 422, "sequences[0]", "steps"),
    ("non-numeric", {"sequences": [[0.1, "x"]]}, 422, "sequences[0]", "only numbers"),
    ("NaN literal", b'{"sequences": [[0.1, NaN]]}', 400, "body", "not valid JSON"),
    ("Infinity overflow", b'{"sequences": [[0.1, 1e309]]}', 400, "body", "not valid JSON"),
    ("ragged inner arrays", {"sequences": [[[0.1], [0.2, 0.3]]]}, 422, "sequences[0]", "ragged"),
    ("no sequences", {"inputs": [[0.1]]}, 422, "inputs", "unknown field"),
]


@pytest.mark.parametrize("case, body, status, field, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_json_4xx_naming_the_field(server, case, body, status, field, message) -> None:
    response = _post(server, "italy", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field and message in error["message"]


def test_unknown_model_wrong_content_type_and_oversized_body(server) -> None:
    missing = _post(server, "nope", {"sequences": [[0.1]]})
    assert missing.status_code == 404 and "italy" in missing.json()["error"]["message"]
    text = _post(server, "italy", b"sequences=1", headers={"content-type": "text/plain"})
    assert text.status_code == 415 and text.json()["error"]["field"] == "content-type"
    huge = b'{"sequences": [[' + b"0.1," * 2_000_000 + b"0.1]]}"
    too_big = _post(server, "italy", huge)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "body_too_large"


def test_still_serving_after_bad_input(server) -> None:
    for body in (b"{", b"[]", b'{"sequences": [[[[[[1]]]]]]}'):
        assert 400 <= _post(server, "italy", body).status_code < 500
    assert _post(server, "italy", {"sequences": [[0.1] * 24]}).status_code == 200
    assert httpx.get(f"{server.url}/health/ready").status_code == 200


def test_predict_client_command(server) -> None:
    values = ",".join(["0.5"] * 24)
    answers = [json.loads(subprocess.run([sys.executable, "-m", "gru_cli", "predict", "--url", server.url,
                                          "--model", "italy", "--values", values, *flag],
                                         capture_output=True, text=True, check=True).stdout)
               for flag in ([], ["--binary"])]
    assert answers[0]["predictions"][0]["label"] in {"1", "2"}
    assert answers[0] == answers[1]  # JSON and binary float32 bodies: the same answer


def test_python_client_binary_equals_json(server) -> None:
    """service.client.predict: ragged sequences as float32 (padded, X-Lengths) answer as JSON does."""
    rng = np.random.default_rng(3)
    sequences = [rng.normal(size=(n, 1)).round(3).tolist() for n in (24, 17, 9)] + [[0.25] * 20]
    as_json = predict(server.url, "italy", sequences)
    as_binary = predict(server.url, "italy", sequences, binary=True)
    assert as_json == as_binary and len(as_json["predictions"]) == 4
    with pytest.raises(urllib.error.HTTPError) as refused:  # the server's field-named error
        predict(server.url, "italy", [[float("nan")] * 24], binary=True)
    assert refused.value.code == 422 and json.loads(refused.value.read())["error"]["field"] == \
        "sequences[0][0]"
