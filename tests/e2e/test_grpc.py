"""The Open Inference Protocol over gRPC against a real server process, through the official
`tritonclient.grpc` (sync and aio) unchanged: health, metadata, config, inference with raw and typed
tensors, carried state, sequences (unary and over ModelStreamInfer), the errors, auth and metrics.
Answers equal the native REST API's."""

from __future__ import annotations

import asyncio
import json
import queue

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers import Server
from training.config import DataConfig, ResolvedModelConfig
from training.data import load_data
from training.model import GRUModel

TOKEN = "grpc-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
# the italy fixture's state (tests/helpers.py train_tiny: hidden 16, one layer, the default conv front end
# and pooled readout)
STATE_SIZE = GRUModel(ResolvedModelConfig(hidden_size=16, num_layers=1, frontend="conv",
                                          patch=1)).state_size()


@pytest.fixture(scope="module")
def grpc_server(repository):
    running = Server(repository, grpc=True, GRU_API_TOKENS=TOKEN).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(grpc_server):
    with triton.InferenceServerClient(grpc_server.grpc_url) as with_client:
        yield with_client


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return load_data(DataConfig(dataset="ItalyPowerDemand")).test.X[:8]  # (8, 24, 1) float32


def native(server: Server, name: str, sequences: np.ndarray) -> np.ndarray:
    response = httpx.post(f"{server.url}/models/{name}/predict", json={"sequences": sequences.tolist()},
                          headers=AUTH)
    body = response.json()
    key = "probabilities" if "labels" in body else "forecast"
    return np.array([p[key] for p in body["predictions"]], np.float32)


def tensor(name: str, array: np.ndarray) -> triton.InferInput:
    item = triton.InferInput(name, list(array.shape), "FP32")
    item.set_data_from_numpy(np.ascontiguousarray(array, np.float32))
    return item


def test_health_metadata_and_config(client, grpc_server) -> None:
    assert client.is_server_live(headers=AUTH) and client.is_server_ready(headers=AUTH)
    assert client.is_model_ready("italy", headers=AUTH) and client.is_model_ready("italy", "1", headers=AUTH)
    assert not client.is_model_ready("italy", "9", headers=AUTH)
    assert not client.is_model_ready("nope", headers=AUTH)
    server = client.get_server_metadata(headers=AUTH, as_json=True)
    assert server["name"] == "gru-serve" and "sequence" in server["extensions"]
    meta = client.get_model_metadata("italy", headers=AUTH, as_json=True)
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "-1", "1"]},
                              {"name": "state", "datatype": "FP32", "shape": ["-1", str(STATE_SIZE)]}]
    assert [o["name"] for o in meta["outputs"]] == ["output", "next_state"]
    assert client.get_model_metadata("italy", "1", headers=AUTH).versions == ["1"]
    config = client.get_model_config("italy", headers=AUTH).config
    rest = httpx.get(f"{grpc_server.url}/v2/models/italy/config", headers=AUTH).json()
    assert (config.name, config.platform, config.max_batch_size) == ("italy", rest["platform"],
                                                                      rest["max_batch_size"])
    assert [(t.name, list(t.dims), t.optional) for t in config.input] == [
        (t["name"], t["dims"], t["optional"]) for t in rest["input"]]
    assert config.sequence_batching.max_sequence_idle_microseconds == \
        rest["sequence_batching"]["max_sequence_idle_microseconds"]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_infer_matches_the_native_api(client, grpc_server, series, batch: int) -> None:
    X = series[:batch]
    outputs = [triton.InferRequestedOutput(n) for n in ("output", "next_state")]
    result = client.infer("italy", [tensor("x", X)], outputs=outputs, request_id=f"r-{batch}", headers=AUTH)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("italy", "1", f"r-{batch}")
    np.testing.assert_allclose(result.as_numpy("output"), native(grpc_server, "italy", X), atol=1e-6)
    assert result.as_numpy("next_state").shape == (batch, STATE_SIZE)


def test_typed_contents_give_the_raw_answer(grpc_server, client, series) -> None:
    """fp32_contents instead of raw_input_contents (tritonclient always sends raw: its stub here)."""
    request = service_pb2.ModelInferRequest(model_name="airline")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 24, 1]).contents.fp32_contents.extend(
        series[:2].reshape(-1).tolist())
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=tuple(AUTH.items()))
    typed = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(response.outputs[0].shape))
    raw = client.infer("airline", [tensor("x", series[:2])], headers=AUTH).as_numpy("output")
    np.testing.assert_array_equal(typed, raw)
    np.testing.assert_allclose(typed, native(grpc_server, "airline", series[:2]), atol=1e-6)


def test_carried_state_equals_one_pass(client, series) -> None:
    def run(x: np.ndarray, state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        inputs = [tensor("x", x)] + ([tensor("state", state)] if state is not None else [])
        result = client.infer("italy", inputs, headers=AUTH)
        return result.as_numpy("output"), result.as_numpy("next_state")

    whole, _ = run(series, None)
    _, state = run(series[:, :10], None)
    chunked, _ = run(series[:, 10:], state)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_sequence_parameters_on_unary_calls(client, grpc_server, series) -> None:
    """sequence_id / sequence_start / sequence_end: the server holds the state between chunks."""
    one = series[2:3]
    for start, stop in ((0, 7), (7, 15), (15, 24)):
        result = client.infer("italy", [tensor("x", one[:, start:stop])], sequence_id=77,
                              sequence_start=start == 0, sequence_end=stop == 24, headers=AUTH)
        prefix = native(grpc_server, "italy", one[:, :stop])
        np.testing.assert_allclose(result.as_numpy("output"), prefix, atol=1e-6)
    with pytest.raises(InferenceServerException, match="ended") as caught:
        client.infer("italy", [tensor("x", one[:, :1])], sequence_id=77, headers=AUTH)
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_model_stream_infer_carries_a_sequence_and_survives_errors(grpc_server, series) -> None:
    """Chunks of two interleaved sequences over one ModelStreamInfer stream; a bad request in between is
    answered with its error and the stream goes on."""
    answers: queue.Queue = queue.Queue()
    a, b = series[3:4], series[4:5]
    with triton.InferenceServerClient(grpc_server.grpc_url) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=AUTH)
        for start, stop in ((0, 12), (12, 24)):
            for sequence_id, x in (("seq-a", a), ("seq-b", b)):
                client.async_stream_infer("italy", [tensor("x", x[:, start:stop])], sequence_id=sequence_id,
                                          sequence_start=start == 0, sequence_end=stop == 24,
                                          request_id=f"{sequence_id}-{stop}")
            if start == 0:
                client.async_stream_infer("italy", [tensor("x", np.zeros((1, 2, 3)))], request_id="bad")
        client.stop_stream()
    got = [answers.get(timeout=10) for _ in range(5)]
    ids = [result.get_response().id if result else "error" for result, _ in got]
    assert ids == ["seq-a-12", "seq-b-12", "error", "seq-a-24", "seq-b-24"]
    assert "expected [batch, time, 1]" in str(got[2][1])
    whole = native(grpc_server, "italy", np.concatenate([a, b]))
    np.testing.assert_allclose(got[3][0].as_numpy("output")[0], whole[0], atol=1e-6)
    np.testing.assert_allclose(got[4][0].as_numpy("output")[0], whole[1], atol=1e-6)


def test_aio_client_infer_and_stream(grpc_server, series) -> None:
    async def main() -> tuple[np.ndarray, list[np.ndarray]]:
        async with triton_aio.InferenceServerClient(grpc_server.grpc_url) as client:
            assert await client.is_server_ready(headers=AUTH)
            calls = [client.infer("italy", [tensor("x", series[i:i + 1])], headers=AUTH) for i in range(8)]
            results = await asyncio.gather(*calls)

            async def chunks():
                for start, stop in ((0, 8), (8, 16), (16, 24)):
                    yield {"model_name": "italy", "inputs": [tensor("x", series[5:6, start:stop])],
                           "sequence_id": 9001, "sequence_start": start == 0, "sequence_end": stop == 24}

            streamed = [result.as_numpy("output") async for result, error in
                        client.stream_infer(chunks(), headers=AUTH) if error is None]
        return np.concatenate([r.as_numpy("output") for r in results]), streamed

    batched, streamed = asyncio.run(main())
    np.testing.assert_allclose(batched, native(grpc_server, "italy", series), atol=1e-6)
    assert len(streamed) == 3
    np.testing.assert_allclose(streamed[-1], native(grpc_server, "italy", series[5:6]), atol=1e-6)


INVALID, NOT_FOUND = "StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND"
ZEROS = np.zeros((1, 3, 1))
BAD = [
    ("bad shape", dict(x=np.zeros((1, 3, 2))), INVALID, r"x has shape \[1, 3, 2\]"),
    ("bad datatype", dict(x=ZEROS, datatype="FP64"), INVALID, r"inputs\[0\].datatype is 'FP64'"),
    ("bad state", dict(x=ZEROS, state=np.zeros((2, STATE_SIZE))), INVALID,
     rf"state has shape \[2, {STATE_SIZE}\]"),
    ("not finite", dict(x=np.full((1, 3, 1), np.inf)), INVALID, "not a finite"),
    ("unknown model", dict(x=ZEROS, model="nope"), NOT_FOUND, "no model named 'nope'"),
    ("unknown version", dict(x=ZEROS, version="4"), NOT_FOUND, "no loaded version 4"),
]


@pytest.mark.parametrize("case, given, status, message", BAD, ids=[b[0] for b in BAD])
def test_errors_are_statuses_naming_the_field(client, case, given, status, message) -> None:
    x = triton.InferInput("x", list(given["x"].shape), given.get("datatype", "FP32"))
    x.set_data_from_numpy(given["x"].astype(np.float64 if "datatype" in given else np.float32))
    inputs = [x] + ([tensor("state", given["state"])] if "state" in given else [])
    with pytest.raises(InferenceServerException, match=message) as caught:
        client.infer(given.get("model", "italy"), inputs, model_version=given.get("version", ""),
                     headers=AUTH)
    assert caught.value.status() == status


def test_auth_request_id_and_error_metadata(grpc_server) -> None:
    """The token rules of REST (health open, the rest needs an API token); the caller's request id and
    the error's code and field come back in the trailing metadata."""
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest()).live  # health: open by default
        refusals = [((), "needs 'authorization: Bearer <token>' metadata"),
                    ((("authorization", "Bearer wrong"),), "not valid")]
        for metadata, message in refusals:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="italy"), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in caught.value.details()
        request = service_pb2.ModelInferRequest(model_name="italy")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 2, 1])
        request.raw_input_contents.append(b"\0" * 4)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=(*AUTH.items(), ("x-request-id", "grpc-req-1")))
        trailing = dict(caught.value.trailing_metadata())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents[0] holds 4 bytes" in caught.value.details()
        assert trailing == {"x-request-id": "grpc-req-1", "gru-error-code": "invalid_input",
                            "gru-error-field": "raw_input_contents[0]"}
        _, call = stub.ServerMetadata.with_call(service_pb2.ServerMetadataRequest(),
                                                metadata=(*AUTH.items(), ("x-request-id", "grpc-req-2")))
        assert dict(call.trailing_metadata())["x-request-id"] == "grpc-req-2"
    grpc_server.output_with("grpc-req-1")
    logged = [e for e in grpc_server.json_lines() if "grpc-req-1" in json.dumps(e)]
    assert [(e["path"], e["status"]) for e in logged] == [("/inference.GRPCInferenceService/ModelInfer", 400)]


def test_requests_are_counted_with_api_grpc_and_in_the_statistics(grpc_server, client) -> None:
    [stats] = client.get_inference_statistics("italy", headers=AUTH).model_stats
    assert (stats.name, stats.version) == ("italy", "1") and stats.inference_count > 0
    assert stats.inference_stats.success.count > 0 and stats.inference_stats.fail.count > 0
    every = client.get_inference_statistics(headers=AUTH).model_stats
    assert sorted(s.name for s in every) == ["airline", "italy"]
    text = httpx.get(f"{grpc_server.url}/metrics").text
    counted = {line.split(" ")[0] for line in text.splitlines() if 'api="grpc"' in line}
    assert 'gru_requests_total{api="grpc",model="italy",status="200",version="1"}' in counted
    assert 'gru_requests_total{api="grpc",model="italy",status="400",version="1"}' in counted
    histogram = 'gru_request_duration_seconds_count{api="grpc",model="italy"'
    assert any(name.startswith(histogram) for name in counted)


@pytest.fixture(scope="module")
def tight_server(repository):
    """Two workers on one gRPC port (SO_REUSEPORT), a queue of one sequence, a 64 KB message limit, 16 KB
    of metadata."""
    running = Server(repository, grpc=True, GRU_WORKERS="2", GRU_MAX_QUEUE_SIZE="1",
                     GRU_MAX_BODY_BYTES=str(64 * 1024), GRU_MAX_HEADER_BYTES=str(16 * 1024)).start()
    yield running
    running.stop()


def test_limits_oversize_message_and_full_queue(tight_server, series) -> None:
    with triton.InferenceServerClient(tight_server.grpc_url) as client:
        big = np.zeros((1, 24 * 1024, 1), np.float32)  # 96 KB of raw contents
        with pytest.raises(InferenceServerException, match="larger than max") as caught:
            client.infer("italy", [tensor("x", big)])
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        with pytest.raises(InferenceServerException) as caught:  # metadata over GRU_MAX_HEADER_BYTES
            client.is_server_live(headers={"x-padding": "p" * 20_000})
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert client.infer("italy", [tensor("x", series)]).as_numpy("output").shape == (8, 2)

    async def burst() -> list[str]:
        async with triton_aio.InferenceServerClient(tight_server.grpc_url) as client:
            calls = [client.infer("italy", [tensor("x", np.repeat(series, 8, axis=0))]) for _ in range(32)]
            results = await asyncio.gather(*calls, return_exceptions=True)
        return [r.status() if isinstance(r, InferenceServerException) else "ok" for r in results]

    statuses = asyncio.run(burst())
    assert "ok" in statuses and "StatusCode.UNAVAILABLE" in statuses, statuses
    assert set(statuses) <= {"ok", "StatusCode.UNAVAILABLE"}
