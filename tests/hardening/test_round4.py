"""Hardening round 4: a repository that holds odd files while the server runs, and the official Triton
clients' calls. Each defect found, tried the way it was found, over a real server."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers import Server

NON_UTF8 = b"\xff\xfe"


def bundle_copy(repository: Path, root: Path, name: str, **onnx: str) -> Path:
    """italy/1 copied as `name`/1, its manifest renamed (and its onnx section changed)."""
    bundle = root / name / "1"
    shutil.copytree(repository / "italy" / "1", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["name"] = name
    manifest["onnx"].update(onnx)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


@pytest.fixture(scope="module")
def odd_repository(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("round4") / "models"
    shutil.copytree(repository / "italy", root / "italy")
    os.mkfifo(bundle_copy(repository, root, "fifo") / "model.onnx.tmp")
    os.replace(root / "fifo" / "1" / "model.onnx.tmp", root / "fifo" / "1" / "model.onnx")
    (root / "copying").mkdir()  # a model folder whose version folder is not there yet
    os.makedirs(os.fsencode(root) + b"/" + NON_UTF8 + b"/1")
    (bundle_copy(repository, root, "binary") / "manifest.json").write_bytes(b"\x80\xff{")
    outside = bundle_copy(repository, root, "outside", file="weights.bin")
    (outside / "weights.bin").symlink_to(repository / "italy" / "1" / "model.onnx")
    bundle_copy(repository, root, "badpolicy")
    (root / "badpolicy" / "serving.json").write_text('{"version_policy": ')
    bundle_copy(repository, root, "policylink")
    (root.parent / "elsewhere.json").write_text('{"version_policy": "secret"}')
    (root / "policylink" / "serving.json").symlink_to(root.parent / "elsewhere.json")
    return root


@pytest.fixture(scope="module")
def served(odd_repository: Path):
    running = Server(odd_repository, grpc=True, GRU_POLL_INTERVAL_S="0.5").start()
    yield running
    running.stop()


def index(served: Server) -> dict[str, dict]:
    response = httpx.post(f"{served.url}/v2/repository/index", timeout=30)
    assert response.status_code == 200, response.text
    return {entry["name"]: entry for entry in response.json()}


def test_a_fifo_in_place_of_a_bundle_file_is_refused_without_blocking_the_repository(served) -> None:
    """The graph read blocked for ever on the FIFO, holding the repository lock: start-up never finished
    (and, when the FIFO appeared later, every poll, load and unload hung, and so did SIGTERM)."""
    assert "not a regular file" in index(served)["fifo"]["reason"]
    assert httpx.post(f"{served.url}/v2/repository/models/fifo/load", timeout=30).status_code == 400
    assert httpx.post(f"{served.url}/v2/repository/models/italy/load", timeout=30).status_code == 200


def test_an_empty_model_folder_does_not_stop_start_up(served) -> None:
    """`mkdir models/copying` before the copy: start-up failed with 'no bundles for model' and a traceback."""
    assert "copying" in served.output() and "no version loads" in served.output()
    assert httpx.get(f"{served.url}/v2/models/italy/ready", timeout=30).status_code == 200


def test_a_folder_name_that_is_not_utf8_is_listed_escaped(served) -> None:
    """The index answered 500: the name's lone surrogates could not be encoded as JSON."""
    entry = index(served)["\\xff\\xfe"]
    assert entry["state"] == "UNAVAILABLE" and "model folder name" in entry["reason"]


def test_a_manifest_that_is_not_utf8_names_the_file(served) -> None:
    """It said only "UnicodeDecodeError: 'utf-8' codec can't decode byte 0x80"."""
    assert index(served)["binary"]["reason"] == ("binary/1/manifest.json: the manifest is not UTF-8 text "
                                                 "(byte 0); re-export the bundle with `gru export`")


def test_a_graph_file_not_named_onnx_cannot_lead_outside_the_repository(served) -> None:
    """onnx.file 'weights.bin', a symlink out of the repository, loaded: only *.onnx files were checked."""
    entry = index(served)["outside"]
    assert entry["state"] == "UNAVAILABLE" and "onnx.file" in entry["reason"]


def test_a_serving_json_that_cannot_be_used_is_in_the_index_and_logged_once(served, repository,
                                                                          odd_repository) -> None:
    """The index said 'not selected by the version policy'; every poll logged the error again (and an
    INFO line); a serving.json symlinked out of the repository was read, its content quoted."""
    entries = index(served)
    assert "badpolicy/serving.json: (document): Invalid JSON" in entries["badpolicy"]["reason"]
    assert "resolves outside the model repository" in entries["policylink"]["reason"]
    bundle_copy(repository, odd_repository, "late")  # loaded by a poll: polls ran since start-up
    assert wait_for(lambda: index(served).get("late", {}).get("state") == "READY")
    assert served.output().count("badpolicy/serving.json") == 2  # at start-up: the error, "no version loads"
    assert "secret" not in served.output()


def test_a_load_with_a_config_override_is_refused_not_ignored(served) -> None:
    """tritonclient's load_model(config=...) and files= answered 200 and loaded the bundle as it was."""
    url = f"{served.url}/v2/repository/models/italy/load"
    for key in ("config", "file:1/model.onnx"):
        response = httpx.post(url, json={"parameters": {key: "{}"}}, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json()["field"] == f"parameters.{key}"
    assert httpx.post(url, content=b"{", timeout=30).json()["code"] == "malformed_body"
    assert httpx.post(url, json={"parameters": {}}, timeout=30).status_code == 200


def test_load_of_an_unknown_model_does_not_show_the_server_path(served, odd_repository: Path) -> None:
    response = httpx.post(f"{served.url}/v2/repository/models/nope/load", timeout=30)
    assert response.status_code == 404 and str(odd_repository) not in response.text


@pytest.mark.parametrize("method", ["SystemSharedMemoryStatus", "CudaSharedMemoryStatus", "TraceSetting"])
def test_grpc_calls_not_served_do_not_point_at_the_repository(served, method: str) -> None:
    """Every unserved call said 'the model repository is served over REST', shared memory's too."""
    request = getattr(service_pb2, f"{method}Request")()
    with grpc.insecure_channel(served.grpc_url) as channel, pytest.raises(grpc.RpcError) as raised:
        getattr(service_pb2_grpc.GRPCInferenceServiceStub(channel), method)(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert raised.value.details() == f"{method} is not served over gRPC by gru-serve"


def streaming_sessions(url: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = re.search(r'^gru_streaming_sessions\{model="italy"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except httpx.TransportError:
            pass  # no worker up yet
        time.sleep(0.2)
    return False


def test_a_killed_worker_s_live_gauges_are_dropped(repository: Path) -> None:
    """Workers killed with SIGKILL (the OOM killer's way) never drop their live gauges: /metrics kept
    counting their streaming sessions after they were gone, for ever."""
    served = Server(repository, GRU_WORKERS="2").start()
    try:
        request = {"inputs": [{"name": "x", "shape": [1, 24, 1], "datatype": "FP32", "data": [0.5] * 24}]}
        for i in range(6):  # one connection each: the workers share them
            opening = {"parameters": {"sequence_id": f"s{i}", "sequence_start": True}}
            answer = httpx.post(f"{served.url}/v2/models/italy/infer", json=request | opening, timeout=30)
            assert answer.status_code == 200, answer.text
        assert wait_for(lambda: streaming_sessions(served.url) == 6)
        for pid in re.findall(r"Started server process \[(\d+)\]", served.output()):
            os.kill(int(pid), signal.SIGKILL)  # uvicorn starts another in its place
        assert wait_for(lambda: streaming_sessions(served.url) in (0, None)), served.output()[-2000:]
    finally:
        served.stop()


def test_sigterm_closes_open_grpc_streams_at_once(repository: Path) -> None:
    """An open ModelStreamInfer stream kept being served through the whole GRU_SHUTDOWN_TIMEOUT_S after
    SIGTERM (shutdown waited for it), then was cut. Now it is closed with UNAVAILABLE, saying why."""
    served = Server(repository, grpc=True, GRU_SHUTDOWN_TIMEOUT_S="120").start()
    request = service_pb2.ModelInferRequest(model_name="italy")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 24, 1])
    request.raw_input_contents.append(b"\0" * 96)
    try:
        with grpc.insecure_channel(served.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            sent = queue.Queue()
            sent.put(request)
            stream = stub.ModelStreamInfer(iter(sent.get, None), timeout=120)
            assert not next(stream).error_message
            started = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as closed:
                next(stream)
            assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "the server is shutting down" in closed.value.details()
            sent.put(None)
        assert served.process.wait(timeout=60) == 0 and time.monotonic() - started < 60
    finally:
        served.stop()


def test_a_client_gone_before_its_answer_is_logged_499_not_500(served) -> None:
    """A client that closed mid-body was logged and counted as 500, a server fault: the 5xx ratio that
    GruHighErrorRatio pages on rose with every client that gave up."""
    body = json.dumps({"sequences": [[[0.5]] * 24]}).encode()
    head = (f"POST /models/italy/predict HTTP/1.1\r\nHost: x\r\nX-Request-ID: round4-gone\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.sendall(head.encode() + body[:-5])
    served.output_with("round4-gone")
    line = next(line for line in served.json_lines() if line.get("request_id") == "round4-gone")
    assert line["status"] == 499, line
    metrics = httpx.get(f"{served.url}/metrics", timeout=30).text
    assert 'status="499"' in metrics and 'status="500"' not in metrics


def test_a_half_closed_connection_gets_the_answers_to_its_whole_requests(served) -> None:
    """A client that sends its requests, then shutdown(SHUT_WR) (`nc -N`): uvicorn closed the connection at
    EOF, so the answers were computed (and logged 200) but never sent."""
    body = json.dumps({"sequences": [[[0.5]] * 24]}).encode()
    request = (f"POST /models/italy/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    for sent, answers in ((request, 1), (request * 3, 3), (request * 2 + request[:40], 2), (request[:-5], 0)):
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.sendall(sent)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(30)
            received = b""
            while chunk := sock.recv(1 << 16):  # until the server closes
                received += chunk
        assert received.count(b"HTTP/1.1 200 OK\r\n") == answers == received.count(b'"predictions"'), received


def test_streams_cancelled_while_waiting_leave_nothing_in_the_log(served) -> None:
    """With the shutdown watch, a stream cancelled while it waited for its next request left a task whose
    StopAsyncIteration nobody read: an ERROR 'Task exception was never retrieved' per stream."""
    request = service_pb2.ModelInferRequest(model_name="italy")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 24, 1])
    request.raw_input_contents.append(b"\0" * 96)
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(20):
            sent = queue.Queue()
            sent.put(request)
            stream = stub.ModelStreamInfer(iter(sent.get, None), timeout=60)
            assert not next(stream).error_message  # answered: now it waits for the next request
            stream.cancel()
            sent.put(None)
        stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30)
    time.sleep(1)  # the log of a task dropped with an exception comes when the task is freed
    assert "never retrieved" not in served.output()
