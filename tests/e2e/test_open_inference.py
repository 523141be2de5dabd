"""The Open Inference Protocol (KServe v2) against a real server process, through the official
`tritonclient` (binary and JSON tensors) and raw HTTP; answers equal the native API's."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from training.config import DataConfig
from training.data import load_data


@pytest.fixture(scope="module")
def client(server):
    with_client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield with_client
    with_client.close()


def native(server, name: str, sequences) -> np.ndarray:
    body = httpx.post(f"{server.url}/models/{name}/predict", json={"sequences": sequences}).json()
    key = "probabilities" if "labels" in body else "forecast"
    return np.array([p[key] for p in body["predictions"]], np.float32)


def test_health_and_metadata_through_tritonclient(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("italy") and client.is_model_ready("italy", "1")
    assert not client.is_model_ready("italy", "9") and not client.is_model_ready("nope")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data", "model_repository"]
    meta = client.get_model_metadata("italy")
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 1]},
                              {"name": "state", "datatype": "FP32", "shape": [-1, 16]}]
    assert [o["name"] for o in meta["outputs"]] == ["output", "next_state"]
    assert client.get_model_metadata("italy", "1")["versions"] == ["1"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "JSON tensors"])
def test_infer_matches_the_native_api(client, server, binary: bool) -> None:
    X = load_data(DataConfig(dataset="ItalyPowerDemand")).test.X[:7]
    x = triton.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("output", "next_state")]
    result = client.infer("italy", [x], outputs=outputs, request_id="r-7")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("italy", "1", "r-7")
    np.testing.assert_allclose(result.as_numpy("output"), native(server, "italy", X.tolist()), atol=1e-7)
    assert result.as_numpy("next_state").shape == (7, 16)


def test_carried_state_equals_one_pass(client) -> None:
    """state in, next_state out: two chunks with the state carried by the client give the one-pass
    answer."""
    X = load_data(DataConfig(dataset="ItalyPowerDemand")).test.X[:4]

    def run(x: np.ndarray, state: np.ndarray | None):
        inputs = [triton.InferInput("x", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(np.ascontiguousarray(x))
        if state is not None:
            inputs.append(triton.InferInput("state", list(state.shape), "FP32"))
            inputs[1].set_data_from_numpy(state)
        result = client.infer("italy", inputs, model_version="1")
        return result.as_numpy("output"), result.as_numpy("next_state")

    whole, _ = run(X, None)
    _, h = run(X[:, :10], None)
    chunked, _ = run(X[:, 10:], h)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_raw_json_nested_data_and_forecast(server) -> None:
    series = load_data(DataConfig(dataset="Airline")).test.X[0, :, 0]
    body = {"inputs": [{"name": "x", "shape": [1, len(series), 1], "datatype": "FP32",
                        "data": series.reshape(1, -1, 1).tolist()}], "outputs": [{"name": "output"}]}
    response = httpx.post(f"{server.url}/v2/models/airline/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["shape"] == [1, 12] and output["datatype"] == "FP32"
    np.testing.assert_allclose(output["data"], native(server, "airline", [series.tolist()])[0], rtol=1e-6)


BAD = [
    ("wrong features", {"inputs": [{"name": "x", "shape": [1, 3, 2], "datatype": "FP32", "data": [0] * 6}]},
     "x.shape", "expected [batch, time, 1]"),
    ("count mismatch", {"inputs": [{"name": "x", "shape": [1, 3, 1], "datatype": "FP32", "data": [0, 1]}]},
     "inputs[0].data", "needs 3"),
    ("strings", {"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": ["a"]}]},
     "inputs[0].data", "only numbers"),
    ("booleans", {"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [True]}]},
     "inputs[0].data", "no booleans"),
    ("unknown input", {"inputs": [{"name": "y", "shape": [1, 1, 1], "datatype": "FP32", "data": [1]}]},
     "inputs", "takes 'x'"),
    ("bad datatype", {"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "BYTES", "data": ["a"]}]},
     "inputs[0].datatype", "send FP32"),
    ("bad state", {"inputs": [{"name": "x", "shape": [1, 2, 1], "datatype": "FP32", "data": [1, 2]},
                              {"name": "state", "shape": [2, 16], "datatype": "FP32", "data": [0] * 32}]},
     "state.shape", "expected [1, 16]"),
    ("unknown output", {"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [1]}],
                        "outputs": [{"name": "probs"}]}, "outputs[0].name", "'output'"),
    ("no inputs", {"inputs": []}, "inputs", "inference request like"),
    ("sequence of two", {"inputs": [{"name": "x", "shape": [2, 1, 1], "datatype": "FP32", "data": [1, 2]}],
                         "parameters": {"sequence_id": 3, "sequence_start": True}},
     "x.shape", "a sequence chunk is one sequence"),
]


@pytest.mark.parametrize("case, body, field, message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_400_naming_the_field(server, case, body, field, message) -> None:
    response = httpx.post(f"{server.url}/v2/models/italy/infer", json=body, headers={"x-request-id": "bad-1"})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["field"] == field and message in error["error"] and error["request_id"] == "bad-1"
    assert response.headers["x-request-id"] == "bad-1"


def test_errors_reach_tritonclient_as_exceptions(client) -> None:
    x = triton.InferInput("x", [1, 1, 3], "FP32")
    x.set_data_from_numpy(np.zeros((1, 1, 3), np.float32))
    with pytest.raises(InferenceServerException, match=r"expected \[batch, time, 1\]") as caught:
        client.infer("italy", [x])
    assert caught.value.status() == "400"
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        client.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="no loaded version 4"):
        client.infer("italy", [x], model_version="4")


def test_malformed_binary_header_and_body(server) -> None:
    url = f"{server.url}/v2/models/italy/infer"
    short = httpx.post(url, content=b"{}", headers={"inference-header-content-length": "99"})
    assert short.status_code == 400 and short.json()["field"] == "inference-header-content-length"
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 2, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    extra = httpx.post(url, content=header + b"\0" * 12, headers={"inference-header-content-length":
                                                                  str(len(header))})
    assert extra.status_code == 400 and "follow the tensors" in extra.json()["error"]
    ok = httpx.post(url, content=header + np.array([0.5, 0.7], "<f4").tobytes(),
                    headers={"inference-header-content-length": str(len(header))})
    assert ok.status_code == 200 and len(ok.json()["outputs"][0]["data"]) == 2


def test_sequence_batching_parameters_stream_through_tritonclient(client, server) -> None:
    """sequence_id / sequence_start / sequence_end (Triton's sequence batcher): chunks of one sequence
    give, after each chunk, the whole-prefix answer of the native API."""
    series = np.random.default_rng(5).normal(size=(1, 24, 1)).astype(np.float32)
    for start, stop in ((0, 7), (7, 15), (15, 24)):
        x = triton.InferInput("x", [1, stop - start, 1], "FP32")
        x.set_data_from_numpy(series[:, start:stop])
        result = client.infer("italy", [x], sequence_id=4242, sequence_start=start == 0,
                              sequence_end=stop == 24)
        whole_prefix = native(server, "italy", series[:, :stop].tolist())
        assert np.abs(result.as_numpy("output") - whole_prefix).max() <= 1e-5
    x = triton.InferInput("x", [1, 1, 1], "FP32")
    x.set_data_from_numpy(series[:, :1])
    with pytest.raises(InferenceServerException, match="ended"):
        client.infer("italy", [x], sequence_id=4242)  # ended with the last chunk
