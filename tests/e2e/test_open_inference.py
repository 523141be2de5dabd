"""The Open Inference Protocol (KServe v2) against a real server process, through the official
`tritonclient` (binary and JSON tensors) and raw HTTP; answers equal the native API's."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.bundle import read_manifest
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


def test_health_and_metadata_through_tritonclient(client, repository) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("italy") and client.is_model_ready("italy", "1")
    assert not client.is_model_ready("italy", "9") and not client.is_model_ready("nope")
    extensions = set(client.get_server_metadata()["extensions"])
    assert extensions == {"binary_tensor_data", "model_repository", "model_configuration", "statistics",
                          "sequence"}
    meta = client.get_model_metadata("italy")
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 1]},
                              {"name": "state", "datatype": "FP32",
                               "shape": [-1, read_manifest(repository / "italy" / "1").state.size]}]
    assert [o["name"] for o in meta["outputs"]] == ["output", "next_state"]
    assert client.get_model_metadata("italy", "1")["versions"] == ["1"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "JSON tensors"])
def test_infer_matches_the_native_api(client, server, repository, binary: bool) -> None:
    X = load_data(DataConfig(dataset="ItalyPowerDemand")).test.X[:7]
    x = triton.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("output", "next_state")]
    result = client.infer("italy", [x], outputs=outputs, request_id="r-7")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("italy", "1", "r-7")
    np.testing.assert_allclose(result.as_numpy("output"), native(server, "italy", X.tolist()), atol=1e-7)
    assert result.as_numpy("next_state").shape == (7, read_manifest(repository / "italy" / "1").state.size)


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


def tensor(extra: dict | None = None, **fields) -> dict:
    """A valid request for italy (one sequence of one step), with the input's `fields` replaced."""
    spec = {"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [0.5]} | fields
    return {"inputs": [spec]} | (extra or {})


BAD = [
    ("wrong features", {"inputs": [{"name": "x", "shape": [1, 3, 2], "datatype": "FP32", "data": [0] * 6}]},
     "x.shape", "expected [batch, time, 1]"),
    ("count mismatch", {"inputs": [{"name": "x", "shape": [1, 3, 1], "datatype": "FP32", "data": [0, 1]}]},
     "inputs[0].data", "needs 3"),
    ("strings", {"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": ["a"]}]},
     "inputs[0].data", "only numbers"),
    ("booleans", {"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [True]}]},
     "inputs[0].data", "no strings, booleans"),
    ("unknown input", {"inputs": [{"name": "y", "shape": [1, 1, 1], "datatype": "FP32", "data": [1]}]},
     "inputs", "takes 'x'"),
    ("bad datatype", {"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "BYTES", "data": ["a"]}]},
     "inputs[0].datatype", "inputs are FP32"),
    ("unknown output", {"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [1]}],
                        "outputs": [{"name": "probs"}]}, "outputs[0].name", "'output'"),
    ("no inputs", {"inputs": []}, "inputs", "inference request like"),
    ("sequence of two", {"inputs": [{"name": "x", "shape": [2, 1, 1], "datatype": "FP32", "data": [1, 2]}],
                         "parameters": {"sequence_id": 3, "sequence_start": True}},
     "x.shape", "a sequence chunk is one sequence"),
    # The strict codec: what Triton refuses, refused with the field named (all once 500s or accepted).
    ("datatype list", tensor(datatype=["FP32"]), "inputs[0].datatype", "must be a string"),
    ("datatype object", tensor(datatype={}), "inputs[0].datatype", "must be a string"),
    ("INT32 2^40", tensor(datatype="INT32", data=[2**40]), "inputs[0].datatype", "inputs are FP32"),
    ("UINT8 -1", tensor(datatype="UINT8", data=[-1]), "inputs[0].datatype", "inputs are FP32"),
    ("INT64 2^63", tensor(datatype="INT64", data=[2**63]), "inputs[0].datatype", "inputs are FP32"),
    ("FP64", tensor(datatype="FP64"), "inputs[0].datatype", "no conversion is applied"),
    ("FP16", tensor(datatype="FP16"), "inputs[0].datatype", "no conversion is applied"),
    ("not a datatype", tensor(datatype="FLOAT"), "inputs[0].datatype", "not a datatype of the protocol"),
    ("boolean shape", tensor(shape=[True, 1, True]), "inputs[0].shape", "non-negative integers"),
    ("fractional shape", tensor(shape=[1.5, 1, 1]), "inputs[0].shape", "non-negative integers"),
    ("negative shape", tensor(shape=[1, -1, 1]), "inputs[0].shape", "non-negative integers"),
    ("string data", tensor(data=["0.1"]), "inputs[0].data", "only numbers"),
    ("null data", tensor(data=[None]), "inputs[0].data", "only numbers"),
    ("ragged data", tensor(shape=[1, 2, 1], data=[[1], [2, 3]]), "inputs[0].data", "ragged"),
    ("beyond FP32", tensor(data=[1e39]), "inputs[0].data", "not a finite FP32 number"),
    ("duplicate input", {"inputs": [tensor()["inputs"][0]] * 2}, "inputs[1].name", "given twice"),
    ("data and binary", tensor(parameters={"binary_data_size": 4}), "inputs[0].data", "send one"),
    ("input parameter", tensor(parameters={"colour": "r"}),
     "inputs[0].parameters.colour", "unknown field"),
    ("unknown field", tensor(extra={"inptus": []}), "inptus", "unknown field"),
    ("id not a string", tensor(extra={"id": 7}), "id", "must be a string"),
    ("long sequence_id", tensor(extra={"parameters": {"sequence_id": "s" * 129, "sequence_start": True}}),
     "parameters.sequence_id", "at most 128 characters"),
    ("negative sequence_id", tensor(extra={"parameters": {"sequence_id": -1}}), "parameters.sequence_id",
     "unsigned 64-bit"),
    ("sequence_id 2^64", tensor(extra={"parameters": {"sequence_id": 2**64}}), "parameters.sequence_id",
     "unsigned 64-bit"),
    ("boolean sequence_id", tensor(extra={"parameters": {"sequence_id": True}}), "parameters.sequence_id",
     "unsigned 64-bit"),
    ('sequence_start "false"', tensor(extra={"parameters": {"sequence_id": 5, "sequence_start": "false"}}),
     "parameters.sequence_start", "true or false"),
    ("start without id", tensor(extra={"parameters": {"sequence_start": True}}), "parameters.sequence_id",
     "need a non-zero sequence_id"),
    ("unsupported parameter", tensor(extra={"parameters": {"priority": 1}}), "parameters.priority",
     "unknown field"),
    ("output twice", tensor(extra={"outputs": [{"name": "output"}, {"name": "output"}]}), "outputs[1].name",
     "twice"),
    ("binary_data not bool",
     tensor(extra={"outputs": [{"name": "output", "parameters": {"binary_data": 1}}]}),
     "outputs[0].parameters.binary_data", "true or false"),
]


@pytest.mark.parametrize("case, body, field, message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_400_naming_the_field(server, case, body, field, message) -> None:
    response = httpx.post(f"{server.url}/v2/models/italy/infer", json=body, headers={"x-request-id": "bad-1"})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["field"] == field and message in error["error"] and error["request_id"] == "bad-1"
    assert response.headers["x-request-id"] == "bad-1"


def test_a_state_for_another_batch_gets_a_400_naming_the_field(server, repository) -> None:
    size = read_manifest(repository / "italy" / "1").state.size
    body = {"inputs": [{"name": "x", "shape": [1, 2, 1], "datatype": "FP32", "data": [1, 2]},
                       {"name": "state", "shape": [2, size], "datatype": "FP32", "data": [0] * 2 * size}]}
    response = httpx.post(f"{server.url}/v2/models/italy/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "state.shape" and f"expected [1, {size}]" in response.json()["error"]


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


def test_model_config_and_statistics_through_tritonclient(client) -> None:
    config = client.get_model_config("italy")
    assert (config["name"], config["platform"]) == ("italy", "onnxruntime_onnx")
    inputs = {t["name"]: t for t in config["input"]}
    assert inputs["x"]["data_type"] == "TYPE_FP32" and inputs["x"]["dims"][-1] == 1  # one feature
    assert [o["name"] for o in config["output"]] == ["output", "next_state"]
    assert "sequence_batching" in config  # italy streams: sequence_id & co. are served
    assert client.get_model_config("italy", "1") == config
    x = triton.InferInput("x", [3, 24, 1], "FP32")
    x.set_data_from_numpy(np.zeros((3, 24, 1), np.float32))
    before = client.get_inference_statistics("italy")["model_stats"][0]
    client.infer("italy", [x])
    after = client.get_inference_statistics("italy", "1")["model_stats"][0]
    assert (after["name"], after["version"]) == ("italy", "1")
    success = after["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 1 and success["ns"] > 0
    assert after["inference_count"] >= before["inference_count"] + 3  # three sequences run
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    assert after["last_inference"] >= before["last_inference"] > 0
    everything = client.get_inference_statistics()["model_stats"]
    assert {(s["name"], s["version"]) for s in everything} == {("italy", "1"), ("airline", "1")}
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        client.get_model_config("nope")
    with pytest.raises(InferenceServerException, match="no loaded version 9"):
        client.get_inference_statistics("italy", "9")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_through_tritonclient(client, server, algorithm: str) -> None:
    X = load_data(DataConfig(dataset="ItalyPowerDemand")).test.X[:5]
    x = triton.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X)
    result = client.infer("italy", [x], request_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("output"), native(server, "italy", X.tolist()), atol=1e-7)


def test_the_aio_client_works_too(server) -> None:
    import asyncio

    import tritonclient.http.aio as aio_triton

    async def session() -> None:
        aio = aio_triton.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            assert await aio.is_server_ready() and await aio.is_model_ready("italy")
            config = await aio.get_model_config("italy")
            assert config["input"][0]["data_type"] == "TYPE_FP32"
            x = aio_triton.InferInput("x", [2, 24, 1], "FP32")
            x.set_data_from_numpy(np.ones((2, 24, 1), np.float32))
            result = await aio.infer("italy", [x], request_compression_algorithm="gzip")
            assert result.as_numpy("output").shape == (2, 2)
            stats = (await aio.get_inference_statistics("italy"))["model_stats"][0]
            assert stats["inference_stats"]["success"]["count"] >= 1
            bad = aio_triton.InferInput("x", [1, 1, 3], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 1, 3), np.float32))
            with pytest.raises(InferenceServerException, match=r"expected \[batch, time, 1\]"):
                await aio.infer("italy", [bad])
            with pytest.raises(InferenceServerException, match="no model named"):
                await aio.get_model_config("nope")
        finally:
            await aio.close()

    asyncio.run(session())
