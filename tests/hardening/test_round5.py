"""Hardening round 5 (protocol edges and sequences): each defect found, tried the way it was found, on
every API it applies to. docs/guides/limits.md lists them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers import Server, while_the_queue_is_full


@pytest.fixture(scope="module")
def served(repository):
    running = Server(repository, grpc=True).start()
    yield running
    running.stop()


def v2_chunk(steps: int, **parameters) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, steps, 1], "datatype": "FP32", "data": [0.25] * steps}],
            "parameters": parameters}


def grpc_chunk(sequence_id: int, start: bool = False) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="italy")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3, 1])
    request.raw_input_contents.append(np.full(3, 0.25, dtype="<f4").tobytes())
    request.parameters["sequence_id"].uint64_param = sequence_id
    request.parameters["sequence_start"].bool_param = start
    return request


# -- 1. a chunk that waited for the chunk carrying "end" ran on, answered 200 "ended": false ------------

async def _race(url: str, trials: int) -> list[tuple[int, list[httpx.Response]]]:
    """Per trial: a sequence opened, then 6 chunks at once, the first with "end"; the end chunk's steps
    seen and every answer."""
    async with httpx.AsyncClient(timeout=60) as client:
        stream = f"{url}/models/italy/stream"
        outcomes = []
        for trial in range(trials):
            sequence = f"race-{trial}"
            first = {"sequence_id": sequence, "start": True, "steps": [0.1] * 3}
            opened = await client.post(stream, json=first)
            assert opened.status_code == 200, opened.text
            answers = await asyncio.gather(*[
                client.post(stream, json={"sequence_id": sequence, "steps": [0.2] * 50, "end": i == 0})
                for i in range(6)])
            assert answers[0].status_code == 200, answers[0].text
            outcomes.append((answers[0].json()["steps_seen"], list(answers[1:])))
    return outcomes


def test_no_chunk_runs_after_the_chunk_that_ended_its_sequence(served) -> None:
    # before: 15 of 100 chunks queued behind the end chunk were answered 200, "ended": false, steps 103..303
    for end_seen, others in asyncio.run(_race(served.url, trials=12)):
        for answer in others:
            if answer.status_code == 200:  # ran before the end chunk: an earlier prefix
                assert answer.json()["steps_seen"] < end_seen, (end_seen, answer.json())
            else:
                assert answer.status_code == 410 and answer.json()["error"]["code"] == "sequence_ended"
    assert "Traceback" not in served.output()


# -- 2. v2 and gRPC named `sequence_id` as the field of a sequence error: theirs is parameters.sequence_id --

def test_v2_sequence_errors_name_parameters_sequence_id(served) -> None:
    url = f"{served.url}/v2/models/italy/infer"
    unknown = httpx.post(url, json=v2_chunk(3, sequence_id=424242))
    assert unknown.status_code == 404 and unknown.json()["code"] == "sequence_not_found"
    assert unknown.json()["field"] == "parameters.sequence_id"
    assert httpx.post(url, json=v2_chunk(3, sequence_id="s4243", sequence_start=True,
                                         sequence_end=True)).status_code == 200
    ended = httpx.post(url, json=v2_chunk(3, sequence_id="s4243"))
    assert ended.status_code == 410 and ended.json()["code"] == "sequence_ended"
    assert ended.json()["field"] == "parameters.sequence_id"
    native = httpx.post(f"{served.url}/models/italy/stream", json={"sequence_id": "s4243", "steps": [0.1]})
    assert native.status_code == 410 and native.json()["error"]["field"] == "sequence_id"  # its own name


def test_an_integer_sequence_id_and_a_string_one_are_different_sequences(served) -> None:
    """Triton keeps uint64 and string correlation ids apart: 7 and "7" are two sequences. A string id is
    the one the native stream names too (the same sessions)."""
    url = f"{served.url}/v2/models/italy/infer"
    assert httpx.post(url, json=v2_chunk(3, sequence_id=7070, sequence_start=True)).status_code == 200
    stranger = httpx.post(url, json=v2_chunk(3, sequence_id="7070"))
    assert stranger.status_code == 404 and stranger.json()["code"] == "sequence_not_found"
    assert "'7070'" in stranger.json()["error"]
    native = httpx.post(f"{served.url}/models/italy/stream", json={"sequence_id": "7070", "steps": [0.1]})
    assert native.status_code == 404
    with grpc.insecure_channel(served.grpc_url) as channel:  # gRPC's uint64 7070 is v2's integer 7070
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_chunk(7070))
    assert answer.model_name == "italy"
    ended = httpx.post(url, json=v2_chunk(3, sequence_id=7070, sequence_end=True))
    assert ended.status_code == 200


def test_grpc_sequence_errors_name_parameters_sequence_id(served) -> None:
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(grpc_chunk(525252))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert ("gru-error-field", "parameters.sequence_id") in refused.value.trailing_metadata()


# -- 3. "outputs": [] answered no outputs over REST, every output over gRPC (which cannot send []) ---------

def test_an_empty_outputs_list_asks_for_every_output_on_every_api(served) -> None:
    url = f"{served.url}/v2/models/italy/infer"
    for parameters in ({}, {"binary_data_output": True}):
        body = v2_chunk(3, **parameters) | {"outputs": []}
        answer = httpx.post(url, json=body)
        assert answer.status_code == 200, answer.text
        header = answer.content[:int(answer.headers.get("inference-header-content-length",
                                                        len(answer.content)))]
        assert [o["name"] for o in httpx.Response(200, content=header).json()["outputs"]] == \
            ["output", "next_state"]
    with grpc.insecure_channel(served.grpc_url) as channel:
        request = grpc_chunk(0)
        del request.parameters["sequence_id"], request.parameters["sequence_start"]
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        assert [o.name for o in answer.outputs] == ["output", "next_state"]


def test_an_output_that_is_not_an_object_is_named(served) -> None:
    answer = httpx.post(f"{served.url}/v2/models/italy/infer", json=v2_chunk(3) | {"outputs": ["output"]})
    assert answer.status_code == 400 and answer.json()["field"] == "outputs[0]", answer.text
    assert "must be an object" in answer.json()["error"]


# -- 4. Expect: 100-continue answered before the body was asked for: the next request was read as the body --

def _answers(port: int, *sends: bytes) -> bytes:
    """Each send in turn on one connection, then read until the server closes (or 10 s pass)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for data in sends:
            sock.sendall(data)
            time.sleep(0.2)  # the server may close after an answer: later sends may fail, reads still work
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


EXPECTING = (b"POST /models/nope/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Expect: 100-continue\r\nContent-Length: 20\r\n\r\n")
NEXT = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_an_answer_before_the_expected_body_closes_the_connection(served) -> None:
    # before: 404 kept alive, no 100 Continue sent; the client's next request was taken for the 20-byte body
    # and never answered (curl sends no body after a final answer)
    answer = _answers(served.port, EXPECTING)  # read to EOF: the server closed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404") and b"connection: close" in head, answer
    assert b"100 Continue" not in answer and json.loads(body)["error"]["code"] == "model_not_found"


def test_an_expected_body_sent_at_once_keeps_the_connection(served) -> None:
    answer = _answers(served.port, EXPECTING + b"x" * 20, NEXT)  # the client did not wait: the body is read
    assert answer.count(b"HTTP/1.1 404") == 1 and answer.count(b"HTTP/1.1 200") == 1, answer
    good = json.dumps({"sequences": [[0.5] * 24]}).encode()
    served_answer = _answers(served.port, EXPECTING.replace(b"nope", b"italy").replace(
        b"Length: 20", b"Length: %d" % len(good)), good, NEXT)  # the body after 100 Continue
    assert served_answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), served_answer
    assert served_answer.count(b"HTTP/1.1 200") == 2, served_answer


def _refused_then_closed(port: int, request: bytes) -> bytes | None:
    """None: not refused (100 Continue); b"": the server answered 503 and closed (NEXT unanswered); the
    answer: the connection stayed open 10 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = sock.recv(65536)
        if not answer.startswith(b"HTTP/1.1 503"):
            return None
        assert b"queue_full" in answer, answer
        with contextlib.suppress(OSError):  # closed already: the send may fail
            sock.sendall(NEXT)  # before: read as the body (and the rest as a bad request), or no answer
        try:
            while chunk := sock.recv(65536):
                assert b"HTTP/1.1" not in chunk, chunk  # one answer, then EOF
        except ConnectionResetError:  # closed before NEXT came: reset
            pass
        except TimeoutError:
            return answer
        return b""


def test_a_queue_full_refusal_before_the_expected_body_closes_the_connection(repository) -> None:
    # the transport's own 503 (LoadShedder.refusal) kept the connection too
    server = Server(repository, GRU_MAX_QUEUE_SIZE="1").start()
    expecting = EXPECTING.replace(b"nope", b"italy")
    try:
        for _ in while_the_queue_is_full(server, "italy", 256):
            left_open = _refused_then_closed(server.port, expecting)
            if left_open is not None:
                assert not left_open, left_open  # the 503, then 10 s of silence
                return
    finally:
        server.stop()


# -- 5. a model that refuses streaming took a carried v2 `state`: a bidirectional one answered wrong ------

@pytest.fixture(scope="module")
def bidirectional(tmp_path_factory, vowels_bi_run):
    from export.bundle import export_checkpoint

    root = tmp_path_factory.mktemp("round5") / "models"
    export_checkpoint(vowels_bi_run.checkpoint, root, "vowels_bi")
    running = Server(root, grpc=True).start()
    yield running
    running.stop()


def test_a_model_that_cannot_stream_refuses_a_carried_state_on_every_api(bidirectional) -> None:
    # before: 200 over v2 and gRPC, the second half's answer 0.047 off the whole sequence's (vowels_bi)
    x = np.random.default_rng(5).normal(size=(1, 12, 12)).astype(np.float32)
    url = f"{bidirectional.url}/v2/models/vowels_bi/infer"

    def infer(steps: np.ndarray, state: list[float] | None = None) -> httpx.Response:
        data = steps.ravel().tolist()
        inputs = [{"name": "x", "shape": list(steps.shape), "datatype": "FP32", "data": data}]
        if state is not None:
            inputs.append({"name": "state", "shape": [1, len(state)], "datatype": "FP32", "data": state})
        return httpx.post(url, json={"inputs": inputs})

    whole = infer(x).json()["outputs"]
    size = len(whole[1]["data"])
    assert infer(x, [0.0] * size).json()["outputs"][0] == whole[0]  # zeros: a new sequence, served
    carried = infer(x[:, 6:], infer(x[:, :6]).json()["outputs"][1]["data"])
    assert carried.status_code == 400 and carried.json()["code"] == "streaming_unsupported", carried.text
    assert carried.json()["field"] == "state" and "bidirectional" in carried.json()["error"]
    request = service_pb2.ModelInferRequest(model_name="vowels_bi")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 6, 12])
    request.inputs.add(name="state", datatype="FP32", shape=[1, size])
    request.raw_input_contents.extend([x[:, 6:].tobytes(), np.full(size, 0.5, dtype="<f4").tobytes()])
    with grpc.insecure_channel(bidirectional.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("gru-error-field", "state") in refused.value.trailing_metadata()
        streamed = list(stub.ModelStreamInfer(iter([request])))
        assert "cannot carry a state" in streamed[0].error_message


def test_a_window_scaled_forecaster_refuses_a_carried_state(served) -> None:
    x = {"name": "x", "shape": [1, 24, 1], "datatype": "FP32", "data": [100.0 + i for i in range(24)]}
    first = httpx.post(f"{served.url}/v2/models/airline/infer", json={"inputs": [x]}).json()["outputs"][1]
    state = {"name": "state", "shape": first["shape"], "datatype": "FP32", "data": first["data"]}
    carried = httpx.post(f"{served.url}/v2/models/airline/infer", json={"inputs": [x, state]})
    assert carried.status_code == 400 and carried.json()["code"] == "streaming_unsupported", carried.text


# -- held as found: HTTP/1.1 forms every route must keep answering ------------------------------------------

def test_http11_forms_are_answered_in_order_on_one_connection(served) -> None:
    """Pipelined requests on every API (answered in order), a chunked body with a chunk extension and
    trailers, an absolute-form target, a percent-encoded model name, an unknown model, HTTP/1.0."""
    good = json.dumps({"sequences": [[0.5] * 24]}).encode()
    v2_body = json.dumps(v2_chunk(24)).encode()

    def post(target: bytes, body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
        return (b"POST " + target + b" " + version + b"\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)

    chunked = (b"POST /models/italy/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" + b"5;name=value\r\n" + good[:5]
               + b"\r\n%x\r\n" % (len(good) - 5) + good[5:] + b"\r\n0\r\nX-Checksum: 1\r\n\r\n")
    requests = [post(b"/models/italy/predict", good), post(b"/v2/models/italy/infer", v2_body),
                b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", chunked,
                post(b"http://elsewhere:1/v2/models/i%74aly/infer", v2_body),
                post(b"/models/nope/predict", good),
                post(b"/models/italy/stream", json.dumps({"steps": [0.5] * 3}).encode()),
                post(b"/models/italy/predict", good, b"HTTP/1.0")]  # 1.0 without keep-alive: the last
    answer = _answers(served.port, b"".join(requests))
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 200, 200, 200, 200, 404, 200, 200], answer
    assert answer.endswith(b"}") and b"connection: close" in answer.rpartition(b"HTTP/1.1 200")[2]


def test_a_trailing_slash_is_a_404_that_says_so_not_a_redirect_to_the_host_header(served) -> None:
    """Starlette redirected GET and POST /models/ with 307 to http://<the request's Host header>/models: a
    Location any client could choose (and a POST's body is not always sent again). Now one 404 for every
    method, naming the path without the slash."""
    for method, path in (("GET", "/models/"), ("POST", "/models/"), ("POST", "/v2/models/italy/infer/")):
        answer = httpx.request(method, f"{served.url}{path}", headers={"Host": "evil.example"}, json={})
        assert answer.status_code == 404 and "location" not in answer.headers, (method, path)
        assert f"paths take no trailing slash: {path.rstrip('/')}" in answer.text
