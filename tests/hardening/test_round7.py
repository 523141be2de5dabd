"""Hardening round 7 (what strangers with Triton's clients, raw sockets and fuzzers find): each defect
found, tried the way it was found. docs/guides/limits.md lists them."""

from __future__ import annotations

import contextlib
import gzip
import json
import queue
import shutil
import socket
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

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


# -- 4. a unary gRPC call whose message never comes ---------------------------------------------------------

def infer_message() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="italy")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3, 1]).contents.fp32_contents.extend([0.5] * 3)
    return request


def open_without_message(channel: grpc.Channel, stop: threading.Event) -> grpc.Future:
    """A ModelInfer call that sends its headers, then nothing until `stop` (a stream-unary call on the
    unary method: on the wire a unary call whose message is slow to come)."""
    def nothing_until_stopped():
        stop.wait()
        yield from ()
    call = channel.stream_unary(GRPC_SERVICE + "ModelInfer", request_serializer=bytes,
                                response_deserializer=service_pb2.ModelInferResponse.FromString)
    return call.future(nothing_until_stopped(), timeout=30)


def test_unary_calls_whose_message_never_comes_give_their_slots_back(repository) -> None:
    # before: such a call waited for its message for ever, holding one of GRU_MAX_CONNECTIONS call slots:
    # 21 connections of 100 calls held every slot of a default server, every other call RESOURCE_EXHAUSTED
    # "Concurrent RPC limit exceeded" until the attacker left. Now GRU_BODY_TIMEOUT_S applies, as to a body.
    server = Server(repository, grpc=True, GRU_MAX_CONNECTIONS="10", GRU_BODY_TIMEOUT_S="4").start()
    stop = threading.Event()
    try:
        with grpc.insecure_channel(server.grpc_url) as held, grpc.insecure_channel(server.grpc_url) as good:
            calls = [open_without_message(held, stop) for _ in range(12)]
            time.sleep(0.5)
            infer = good.unary_unary(GRPC_SERVICE + "ModelInfer", request_serializer=bytes,
                                     response_deserializer=service_pb2.ModelInferResponse.FromString)
            with pytest.raises(grpc.RpcError) as full:
                infer(infer_message().SerializeToString(), timeout=10)
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # every slot held: for now
            ended = [call.exception(timeout=10) for call in calls]  # 10 held a slot, 2 found none
            timed_out = [e for e in ended if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED]
            assert len(timed_out) == 10 and len(ended) - len(timed_out) == sum(
                e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in ended)
            assert ("gru-error-code", "body_timeout") in timed_out[0].trailing_metadata()
            assert "GRU_BODY_TIMEOUT_S" in timed_out[0].details()
            assert infer(infer_message().SerializeToString(), timeout=10).model_name == "italy"
    finally:
        stop.set()
        server.stop()


def test_a_unary_call_ended_without_its_message_is_invalid_argument(served) -> None:
    # before: the server waited for ever for the message of a call the client had ended (half-closed)
    with grpc.insecure_channel(served.grpc_url) as channel:
        call = channel.stream_unary(GRPC_SERVICE + "ModelInfer", request_serializer=bytes,
                                    response_deserializer=service_pb2.ModelInferResponse.FromString)
        with pytest.raises(grpc.RpcError) as refused:
            call(iter([]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ended without its ModelInferRequest message" in refused.value.details()


# -- 5. bytes after a compressed body's stream ---------------------------------------------------------------

V2_BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 1], "data": [0.5] * 3}]})


TWO_MEMBERS = gzip.compress(V2_BODY[:10].encode()) + gzip.compress(V2_BODY[10:].encode())


@pytest.mark.parametrize("compressed", [gzip.compress(V2_BODY.encode()) + b"junk", TWO_MEMBERS],
                         ids=["junk", "two-members"])
def test_bytes_after_a_compressed_stream_are_refused_by_name(served, compressed) -> None:
    # before: dropped unread: junk after the gzip stream was taken (200), and a body sent as two gzip
    # members (`cat a.gz b.gz`) was cut to the first: 400 "the body is not valid JSON: unexpected end"
    answer = httpx.post(f"{served.url}/v2/models/italy/infer", content=compressed, timeout=10,
                        headers={"content-encoding": "gzip", "content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["field"] == "body", answer.text
    assert "after its compressed stream" in answer.json()["error"]


# -- 6. Triton's shared memory and class_count, asked for with Triton's clients ----------------------------

def test_shared_memory_and_class_count_are_refused_saying_they_are_not_served(served) -> None:
    # before: "unknown field 'outputs[0].parameters.shared_memory_byte_size'; ... may hold ['binary_data']"
    # (gRPC inputs: "an input takes no parameters here"): not why, nor what to send instead
    x = np.full((1, 3, 1), 0.5, np.float32)
    for module, url in ((triton_http, f"127.0.0.1:{served.port}"), (triton_grpc, served.grpc_url)):
        client = module.InferenceServerClient(url)
        shared = module.InferInput("x", [1, 3, 1], "FP32")
        shared.set_shared_memory("region", 12)
        inline = module.InferInput("x", [1, 3, 1], "FP32")
        inline.set_data_from_numpy(x)
        output_to_shared = module.InferRequestedOutput("output")
        output_to_shared.set_shared_memory("region", 8)
        ranked = module.InferRequestedOutput("output", class_count=2)
        for inputs, outputs, said in [([shared], None, "shared-memory extension is not served"),
                                      ([inline], [output_to_shared], "shared-memory extension is not served"),
                                      ([inline], [ranked], "class_count) is not served")]:
            with pytest.raises(InferenceServerException) as refused:
                client.infer("italy", inputs, outputs=outputs)
            assert refused.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), refused.value
            assert said in refused.value.message(), refused.value


# -- 7. Triton's HTTP extensions that are not served ---------------------------------------------------------

def test_triton_s_unserved_http_extensions_say_so(served) -> None:
    # before: a bare 404 "Not Found" for tritonclient's shared-memory, trace and log settings calls (gRPC
    # already said "... is not served over gRPC by gru-serve")
    client = triton_http.InferenceServerClient(f"127.0.0.1:{served.port}")
    for call, extension in [(client.get_system_shared_memory_status, "system shared-memory"),
                            (client.get_cuda_shared_memory_status, "CUDA shared-memory"),
                            (lambda: client.get_trace_settings("italy"), "trace"),
                            (lambda: client.update_log_settings({"log_info": True}), "logging")]:
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert refused.value.status() == "404", refused.value
        assert f"is Triton's {extension} extension, which gru-serve does not serve" in refused.value.message()
    other = httpx.get(f"{served.url}/v2/nothing", timeout=10).json()
    assert other["error"] == "Not Found"


# -- 8. tritonclient's stream_infer(enable_empty_final_response=True) ---------------------------------------

def test_a_stream_asking_for_the_final_flag_gets_it_on_each_answer(served) -> None:
    # before: every request of such a client was refused, "unknown field
    # 'parameters.triton_enable_empty_final_response'"; clients of Triton's streaming wait for an answer
    # with triton_final_response: true before they take a request as done
    client = triton_grpc.InferenceServerClient(served.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        x = triton_grpc.InferInput("x", [1, 3, 1], "FP32")
        x.set_data_from_numpy(np.full((1, 3, 1), 0.5, np.float32))
        client.async_stream_infer("italy", [x], request_id="flagged", enable_empty_final_response=True)
        client.async_stream_infer("italy", [x], request_id="plain")
        got = [answers.get(timeout=10) for _ in range(2)]
    finally:
        client.stop_stream()
    assert [error for _, error in got] == [None, None], got
    flagged, plain = (result.get_response() for result, _ in got)
    assert flagged.id == "flagged" and flagged.parameters["triton_final_response"].bool_param
    assert plain.id == "plain" and "triton_final_response" not in plain.parameters
    assert got[0][0].as_numpy("output").tolist() == got[1][0].as_numpy("output").tolist()
