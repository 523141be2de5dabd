"""Error messages show a refused value as the client wrote it, on every API: NumPy 2 writes a scalar's repr
as `np.float32(nan)`, which named a type the client never sent (found by a red-team fuzz of v2 and gRPC)."""

from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers import Server


@pytest.fixture(scope="module")
def served(repository):
    running = Server(repository, grpc=True).start()
    yield running
    running.stop()


def v2_json(served: Server, value: float) -> str:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 1], "data": [value]}]}
    answer = httpx.post(f"{served.url}/v2/models/italy/infer", json=body)
    assert answer.status_code == 400, answer.text
    return answer.json()["error"]


def v2_binary(served: Server, value: float) -> str:
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 1],
                                     "parameters": {"binary_data_size": 4}}]}).encode()
    answer = httpx.post(f"{served.url}/v2/models/italy/infer", content=header + np.float32(value).tobytes(),
                        headers={"content-type": "application/octet-stream",
                                 "inference-header-content-length": str(len(header))})
    assert answer.status_code == 400, answer.text
    return answer.json()["error"]


def grpc_infer(served: Server, value: float) -> str:
    request = service_pb2.ModelInferRequest(model_name="italy")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1, 1])
    request.raw_input_contents.append(np.float32(value).tobytes())
    with grpc.insecure_channel(served.grpc_url) as channel, pytest.raises(grpc.RpcError) as refused:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return refused.value.details()


@pytest.mark.parametrize(("send", "shown"), [
    (lambda served: v2_json(served, 1e39), "is 1e+39:"),
    (lambda served: v2_binary(served, float("nan")), "is nan:"),
    (lambda served: v2_binary(served, float("-inf")), "is -inf:"),
    (lambda served: grpc_infer(served, float("inf")), "is inf:"),
])
def test_a_refused_number_is_shown_as_a_number(served, send, shown) -> None:
    message = send(served)
    assert shown in message and "np." not in message, message
