"""Hardening round 7 (what strangers with Triton's clients, raw sockets and fuzzers find): each defect
found, tried the way it was found. docs/guides/limits.md lists them."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from tests.helpers import Server


@pytest.fixture(scope="module")
def served(repository, tmp_path_factory):
    """The session's bundles, and an italy version 2 whose graph is cut short (UNAVAILABLE; 1 serves)."""
    root = tmp_path_factory.mktemp("round7") / "models"
    shutil.copytree(repository, root)
    shutil.copytree(root / "italy" / "1", root / "italy" / "2")
    graph = root / "italy" / "2" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:100])
    running = Server(root, grpc=True).start()
    yield running
    running.stop()


def exchange(port: int, *sends: bytes, timeout: float = 10.0) -> bytes:
    """Each send in turn on one connection, then read until the server closes (or `timeout` passes)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may close (and reset) before every send is made
            for data in sends:
                sock.sendall(data)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def chunked_predict(trailer: bytes, shape_header: bytes = b"") -> bytes:
    """A native binary predict of one 3-step sequence, chunked, its last chunk followed by `trailer`."""
    data = np.full((1, 3, 1), 0.5, np.float32).tobytes()
    return (b"POST /models/italy/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            + shape_header + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x\r\n" % len(data) + data + b"\r\n0\r\n" + trailer)


# -- 1. trailer fields (after a chunked body) ---------------------------------------------------------------

def test_a_trailer_field_is_not_taken_for_a_header(served) -> None:
    # before: uvicorn merged trailer fields into the request's headers after the header checks: a trailer
    # X-Shape set the shape (200), unseen by a proxy that checks headers; with the header too, 400 "given
    # more than once". Now trailers are dropped (RFC 9110 6.5.1): the shape must be a header.
    answer = exchange(served.port, chunked_predict(b"X-Shape: 1,3,1\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["field"] == "x-shape"
    answer = exchange(served.port, chunked_predict(b"X-Shape: 3,1,1\r\n\r\n", b"X-Shape: 1,3,1\r\n"))
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b'"label"') == 1, answer


def test_an_endless_trailer_is_431_and_stalls_no_one(served) -> None:
    # before: httptools grew the unfinished trailer value by copying it, without a bound: one connection
    # sending it took 100 MB and the worker's event loop for 12 s (a good client's request waited 12 s),
    # then 408 at the body timeout
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(chunked_predict(b"X-A: "))
        started = time.monotonic()
        with contextlib.suppress(OSError):  # refused and closed while we send: the send fails
            for _ in range(64):
                sock.sendall(b"a" * 65536)
                assert httpx.get(f"{served.url}/health/ready", timeout=5).status_code == 200
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert b"trailer fields" in answer and b"GRU_MAX_HEADER_BYTES" in answer
    assert time.monotonic() - started < 5
    good = httpx.post(f"{served.url}/models/italy/predict", json={"sequences": [[0.5] * 3]}, timeout=10)
    assert good.status_code == 200


def test_a_short_trailer_is_read_and_the_request_served(served) -> None:
    answer = exchange(served.port, chunked_predict(b"X-Checksum: 1\r\n\r\n", b"X-Shape: 1,3,1\r\n"))
    assert answer.startswith(b"HTTP/1.1 200"), answer


# -- 2. a gRPC message that is not valid protobuf ----------------------------------------------------------

GRPC_SERVICE = "/inference.GRPCInferenceService/"
NOT_UTF8_NAME = service_pb2.ModelInferRequest(model_name="italy").SerializeToString().replace(b"italy",
                                                                                             b"ital\xff")


@pytest.mark.parametrize(("method", "message"), [
    ("ModelInfer", NOT_UTF8_NAME), ("ModelInfer", b"\xff\xff\xff"), ("ModelMetadata", b"\x0a\x02\xff\xfe"),
    ("ServerLive", b"\xff"), ("ModelStatistics", b"\x0a\x02\xff\xfe")])
def test_a_message_that_is_not_protobuf_is_invalid_argument(served, method, message) -> None:
    # before: UNKNOWN "Unexpected <class 'DecodeError'>", and an ERROR line with a traceback per call
    # (anyone could fill the log); a string field not UTF-8 is what a hand-made client sends
    with grpc.insecure_channel(served.grpc_url) as channel:
        call = channel.unary_unary(GRPC_SERVICE + method, request_serializer=bytes,
                                   response_deserializer=bytes)
        with pytest.raises(grpc.RpcError) as refused:
            call(message, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"not a valid inference.{method}Request message" in refused.value.details()
    assert ("gru-error-field", "message") in refused.value.trailing_metadata()
    assert "Traceback" not in served.output()


def test_a_stream_message_that_is_not_protobuf_is_answered_and_the_stream_goes_on(served) -> None:
    good = service_pb2.ModelInferRequest(model_name="italy")
    tensor = good.inputs.add(name="x", datatype="FP32", shape=[1, 3, 1])
    tensor.contents.fp32_contents.extend([0.5] * 3)
    with grpc.insecure_channel(served.grpc_url) as channel:
        stream = channel.stream_stream(GRPC_SERVICE + "ModelStreamInfer", request_serializer=bytes,
                                       response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
        answers = list(stream(iter([NOT_UTF8_NAME, good.SerializeToString()]), timeout=10))
    assert "not a valid inference.ModelInferRequest message" in answers[0].error_message
    assert not answers[1].error_message and answers[1].infer_response.model_name == "italy"
    assert "Traceback" not in served.output()


# -- 3. the repository index request ------------------------------------------------------------------------

def test_an_index_request_for_ready_versions_lists_only_those(served) -> None:
    # before: the body was ignored: {"ready": true} listed italy 2 UNAVAILABLE too (Triton lists the ready
    # ones only), and a body that is not JSON, or "ready": "yes", answered 200
    index = f"{served.url}/v2/repository/index"
    every = httpx.post(index, timeout=10).json()
    assert {(e["name"], e["version"], e["state"]) for e in every} >= {("italy", "2", "UNAVAILABLE")}
    ready = httpx.post(index, json={"ready": True}, timeout=10).json()
    assert ready and all(e["state"] == "READY" for e in ready)
    assert {(e["name"], e["version"]) for e in ready} == {("italy", "1"), ("airline", "1")}
    assert httpx.post(index, json={"ready": False}, timeout=10).json() == every
    for body, status, field in [(b"{", 400, "body"), (b'{"ready": "yes"}', 400, "ready"),
                                (b'{"redy": true}', 400, "redy"), (b"[true]", 400, "body")]:
        refused = httpx.post(index, content=body, headers={"content-type": "application/json"}, timeout=10)
        assert (refused.status_code, refused.json()["field"]) == (status, field), refused.text
