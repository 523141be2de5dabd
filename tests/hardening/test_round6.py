"""Hardening round 6 (operator settings, gRPC specifics): each defect found, tried the way it was found.
docs/guides/limits.md lists them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers import Server, free_port

# -- 1. a bad setting: one `gru serve: error:` line naming the variable, exit 2 ---------------------------

# (environment, flags, what the line must say). Before: a pydantic report of 4 lines naming the field
# (max_body_bytes), or a traceback (port 70000, an infinite timeout), or a start that went wrong later.
BAD_SETTINGS = [
    ({"GRU_MAX_BODY_BYTES": "-1"}, [], "GRU_MAX_BODY_BYTES='-1': Input should be greater than 0"),
    ({}, ["--workers", "-3"], "GRU_WORKERS='-3' (from --workers)"),
    ({"GRU_PORT": "70000"}, [], "GRU_PORT='70000'"),  # was OverflowError, a traceback
    ({"GRU_SHUTDOWN_TIMEOUT_S": "inf"}, [], "GRU_SHUTDOWN_TIMEOUT_S='inf': Input should be a finite number"),
    # was served: under load the first batching wait overflowed and killed the model's inference thread
    ({"GRU_MAX_QUEUE_DELAY_MS": "1e300"}, [], "GRU_MAX_QUEUE_DELAY_MS='1e300'"),
    ({"GRU_INTRA_OP_THREADS": "100000"}, [], "GRU_INTRA_OP_THREADS='100000'"),  # was a start-up hung
    ({"GRU_HOST": ""}, [], "GRU_HOST='': must not be empty"),  # was: listening on every interface
    ({"GRU_MODEL_REPOSITORY": ""}, [], "GRU_MODEL_REPOSITORY='': must not be empty"),  # was: serving '.'
    ({"GRU_API_TOKENS_FILE": ""}, [], "GRU_API_TOKENS_FILE='': must not be empty"),
    ({"GRU_STATE_SECRET": ""}, [], "GRU_STATE_SECRET: must not be empty"),
    ({"GRU_STATE_SECRET": "abc"}, [], "GRU_STATE_SECRET: is 3 characters; give at least 16"),  # was: taken
    ({"GRU_MODEL_BATCHING": "{nope"}, [], "GRU_MODEL_BATCHING is not valid JSON"),
    ({"GRU_MODEL_BATCHING": '{"m": {"max_batch_size": 0}}'}, [],
     "GRU_MODEL_BATCHING, model 'm': max_batch_size"),
    # was: every new connection closed before its first request, no answer (gRPC: GOAWAY), nothing said
    ({"GRU_KEEP_ALIVE_TIMEOUT_S": "0.0001"}, [], "GRU_KEEP_ALIVE_TIMEOUT_S='0.0001': Input should be greater "
                                                 "than or equal to 1"),
    # was: served, health and /metrics open (no token, so every route is open)
    ({"GRU_OPEN_HEALTH": "false"}, [], "GRU_OPEN_HEALTH=false closes routes to callers without a token, but "
                                       "no token is set"),
    # was: an idle server kept a core busy rescanning the repository
    ({"GRU_POLL_INTERVAL_S": "0.0001"}, [], "0 turns polling off; otherwise at least 0.1 s"),
    # was: gRPC ModelConfig INTERNAL (Triton's max_batch_size is an int32), a traceback in the log
    ({"GRU_MAX_SEQUENCES_PER_REQUEST": "5000000000"}, [], "GRU_MAX_SEQUENCES_PER_REQUEST='5000000000'"),
    # GRU_WORKERS=2: each worker failed with a traceback and was restarted for ever, never ready, no exit
    ({"GRU_WORKERS": "2", "GRU_API_TOKENS_FILE": "/nonexistent/tokens"}, [], "(GRU_API_TOKENS_FILE)"),
    ({"GRU_WORKERS": "2", "GRU_VERSION_POLICY": "latest"}, [], "GRU_VERSION_POLICY: version policy 'latest'"),
    # said "choose another port"
    ({"GRU_HOST": "192.0.2.1"}, [], "give GRU_HOST or --host an address of this machine"),
]


def serve_error(repository: Path, env: dict[str, str], flags: list[str] | None = None) -> str:
    """The one line `gru serve` says when it refuses to start (exit 2, nothing else said)."""
    env = {**os.environ, "GRU_MODEL_REPOSITORY": str(repository), "GRU_PORT": str(free_port()),
           "GRU_HOST": "127.0.0.1", **env}
    done = subprocess.run([sys.executable, "-m", "gru_cli", "serve", *(flags or [])], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gru serve: error: "), done.stderr
    assert "errors.pydantic.dev" not in lines[0] and done.stdout == ""
    return lines[0]


@pytest.mark.parametrize(("env", "flags", "said"), BAD_SETTINGS, ids=[case[2][:40] for case in BAD_SETTINGS])
def test_a_bad_setting_is_one_error_line_naming_the_variable(tmp_path, env, flags, said) -> None:
    line = serve_error(tmp_path, env, flags)
    assert said in line, line


def test_a_token_setting_that_holds_no_token_is_refused(tmp_path) -> None:
    # before: served with no token at all ("auth: ... open"), while its operator meant it closed
    tokens = tmp_path / "tokens"
    tokens.write_text("# one token per line\n\n")
    assert f"token file {tokens} (GRU_API_TOKENS_FILE) holds no token" in serve_error(
        tmp_path, {"GRU_API_TOKENS_FILE": str(tokens)})
    assert "GRU_ADMIN_TOKENS holds no token" in serve_error(tmp_path, {"GRU_ADMIN_TOKENS": " , "})


def test_grpc_and_http_on_one_port_is_refused_before_anything_starts(tmp_path) -> None:
    # before: gRPC bound first, "Application startup complete", then uvicorn's bind failed: exit 3
    port = str(free_port())
    env = {**os.environ, "GRU_MODEL_REPOSITORY": str(tmp_path), "GRU_PORT": port, "GRU_GRPC_PORT": port}
    done = subprocess.run([sys.executable, "-m", "gru_cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    # "cannot listen on": tests/helpers.py's Server tries other ports when its two free ports are one
    assert done.stderr == (f"gru serve: error: cannot listen on port {port} twice: GRU_GRPC_PORT and "
                           f"GRU_PORT are both {port}; give gRPC a port of its own, or 0 to turn it off\n")


def test_limits_past_grpc_s_32_bits_start_and_serve(repository) -> None:
    # before: GRU_MAX_BODY_BYTES=5e9 (or a 1e300 s timeout) with gRPC on: a start-up traceback, exit 3
    server = Server(repository, grpc=True, GRU_MAX_BODY_BYTES="5000000000", GRU_MAX_HEADER_BYTES="5000000000",
                    GRU_HEADER_TIMEOUT_S="1e300", GRU_KEEP_ALIVE_TIMEOUT_S="1e300",
                    GRU_GRPC_MAX_STREAMS_PER_CONNECTION="5000000000").start()
    try:
        with grpc.insecure_channel(server.grpc_url) as channel:
            answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(2, 3))
        assert [output.name for output in answer.outputs] == ["output", "next_state"]
        answered = httpx.post(f"{server.url}/models/italy/predict", json={"sequences": [[0.1, 0.2]]})
        assert answered.status_code == 200, answered.text
    finally:
        server.stop()
    assert "Traceback" not in server.output()


# -- 2. gRPC: a cancelled call was logged and counted as answered (200); metadata entries uncounted -------

LONG = 8000  # sequences of 256 steps: a run of a good fraction of a second, more on a loaded machine


@pytest.fixture(scope="module")
def served(repository):
    running = Server(repository, grpc=True, GRU_MAX_BODY_BYTES=str(64 << 20),
                     GRU_MAX_SEQUENCES_PER_REQUEST=str(LONG), GRU_MAX_QUEUE_SIZE=str(4 * LONG)).start()
    yield running
    running.stop()


def infer_request(sequences: int, steps: int, sequence_id: int = 0) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="italy")
    request.inputs.add(name="x", datatype="FP32", shape=[sequences, steps, 1])
    request.raw_input_contents.append(np.full(sequences * steps, 0.25, dtype="<f4").tobytes())
    if sequence_id:
        request.parameters["sequence_id"].uint64_param = sequence_id
        request.parameters["sequence_start"].bool_param = True
    return request


def metric(url: str, name: str) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(line.rpartition(" ")[2]) for line in lines if line.startswith(name))


def cancel_when_running(url: str, call: grpc.Future) -> None:
    """Cancel `call` once the server is running it (a request in flight)."""
    deadline = time.monotonic() + 60
    while metric(url, "gru_requests_in_flight") < 1 and not call.done():
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.01)
    assert call.cancel(), "the call ended before it could be cancelled"


def access_line(server: Server, request_id: str) -> dict:
    server.output_with(request_id, timeout=30)
    return next(line for line in server.json_lines() if line.get("request_id") == request_id
                and line.get("logger") == "gru_serve.access")


RUNS = 'gru_batch_padding_ratio_count{model="italy"'  # one per onnxruntime run


def big_channel(server: Server) -> grpc.Channel:
    return grpc.insecure_channel(server.grpc_url, options=[("grpc.max_send_message_length", 64 << 20)])


def served_on(stub: service_pb2_grpc.GRPCInferenceServiceStub,
              request: service_pb2.ModelInferRequest) -> None:
    """The next call is answered (retried while the queue still holds the cancelled call's work)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            assert stub.ModelInfer(request).outputs
            return
        except grpc.RpcError as refused:
            if refused.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_cancelled_grpc_call_is_logged_499_and_stops_running(served) -> None:
    gone = 'gru_requests_total{api="grpc",model="italy",status="499"'
    before, runs = metric(served.url, gone), metric(served.url, RUNS)
    with big_channel(served) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelInfer.future(infer_request(LONG, 256), metadata=[("x-request-id", "rt6-unary")])
        cancel_when_running(served.url, call)
        assert access_line(served, "rt6-unary")["status"] == 499  # was 200: an answer nobody got
        served_on(stub, infer_request(1, 3))
    assert metric(served.url, gone) == before + 1
    # was: all LONG / 64 runs of the cancelled call, holding the model's thread and queue (503 meanwhile)
    assert metric(served.url, RUNS) - runs - 1 < LONG // 64
    assert metric(served.url, "gru_requests_in_flight") == 0


def test_a_cancelled_stream_chunk_is_logged_499_and_stops_running(served) -> None:
    runs = metric(served.url, RUNS)
    with big_channel(served) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(iter([infer_request(LONG, 256)]),
                                     metadata=[("x-request-id", "rt6-stream")])
        cancel_when_running(served.url, call)
        assert access_line(served, "rt6-stream")["status"] == 499
        served_on(stub, infer_request(1, 3, sequence_id=6060))  # a sequence, on another call
    assert metric(served.url, RUNS) - runs - 1 < LONG // 64
    assert "Traceback" not in served.output()


def test_grpc_metadata_entries_are_capped_as_http_header_fields(served) -> None:
    # before: 300 small entries were taken (HTTP takes GRU_MAX_HEADER_COUNT=100 header fields)
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(infer_request(1, 3), metadata=[(f"m{i}", "") for i in range(90)]).outputs
        for method, call in (("unary", lambda md: stub.ModelInfer(infer_request(1, 3), metadata=md)),
                             ("stream", lambda md: list(stub.ModelStreamInfer(iter([infer_request(1, 3)]),
                                                                              metadata=md)))):
            with pytest.raises(grpc.RpcError) as refused:
                call([(f"m{i}", "") for i in range(300)])
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, method
            assert "GRU_MAX_HEADER_COUNT" in refused.value.details(), method
            assert ("gru-error-field", "metadata") in refused.value.trailing_metadata(), method


# -- 3. v2 and gRPC sequence errors told the fix in the native stream's words ("start": true) -------------

def test_sequence_errors_give_the_fix_in_the_words_of_v2_and_grpc(served) -> None:
    # before: 'sequence 8080 is not open; begin it with "start": true', a field v2 and gRPC do not have
    chunk = {"inputs": [{"name": "x", "shape": [1, 2, 1], "datatype": "FP32", "data": [0.1, 0.2]}],
             "parameters": {"sequence_id": 8080}}
    unknown = httpx.post(f"{served.url}/v2/models/italy/infer", json=chunk)
    assert unknown.status_code == 404
    said = unknown.json()["error"]
    assert said == "sequence 8080 is not open; begin it with parameters.sequence_start: true", said
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ended = infer_request(1, 2, sequence_id=8081)
        ended.parameters["sequence_end"].bool_param = True
        assert stub.ModelInfer(ended).outputs
        ended.parameters["sequence_start"].bool_param = False
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(ended)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == ("sequence 8081 has ended (parameters.sequence_end: true); send its "
                                       "steps again from the beginning with parameters.sequence_start: true "
                                       "to begin anew")
    native = httpx.post(f"{served.url}/models/italy/stream", json={"sequence_id": "s-8082", "steps": [0.1]})
    assert native.status_code == 404 and 'begin it with "start": true' in native.json()["error"]["message"]
