"""Hardening round 3: each defect found, tried the way it was found, on every API it applies
to (REST native, v2 JSON and binary, gRPC unary and ModelStreamInfer). docs/guides/limits.md lists them."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers import Server, free_port

TOKEN = "round3-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(repository):
    """One server with every API on and tokens set."""
    running = Server(repository, grpc=True, GRU_API_TOKENS=TOKEN).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(served):
    with grpc.insecure_channel(served.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_infer(shape: list[int], name: str = "x", version: str = "") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="italy", model_version=version)
    request.inputs.add(name=name, datatype="FP32", shape=shape)
    request.raw_input_contents.append(b"")
    return request


# -- 3. zero elements, huge dimensions --------------------------------------------------------------------

HUGE_EMPTY = [[0, 2**62, 2**62], [2**62, 2**62, 0], [0, 2**63 - 1, 1]]


@pytest.mark.parametrize("shape", HUGE_EMPTY)
def test_zero_element_shapes_with_huge_dimensions_are_400_on_v2(served, shape) -> None:
    url = f"{served.url}/v2/models/italy/infer"
    as_json = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": []}]}
    state = {"inputs": [{"name": "x", "shape": [1, 24, 1], "datatype": "FP32", "data": [0.5] * 24},
                        {"name": "state", "shape": shape, "datatype": "FP32", "data": []}]}
    header = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                                     "parameters": {"binary_data_size": 0}}]}).encode()
    for body, extra, field in ((json.dumps(as_json).encode(), {}, "inputs[0].shape"),
                               (json.dumps(state).encode(), {}, "inputs[1].shape"),
                               (header, {"inference-header-content-length": str(len(header))},
                                "inputs[0].shape")):
        response = httpx.post(url, content=body, headers=AUTH | {"content-type": "application/json"} | extra)
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field


@pytest.mark.parametrize("shape", HUGE_EMPTY)
def test_zero_element_shapes_with_huge_dimensions_are_invalid_argument_on_grpc(served, stub, shape) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(grpc_infer(shape), metadata=tuple(AUTH.items()))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("gru-error-field", "inputs[0].shape") in refused.value.trailing_metadata()
    answers = list(stub.ModelStreamInfer(iter([grpc_infer(shape), grpc_infer([1, 24, 1], version="1")]),
                                         metadata=tuple(AUTH.items())))
    assert "inputs[0].shape" in answers[0].error_message and "too large" in answers[0].error_message
    assert answers[1].error_message.startswith("raw_input_contents[0]")  # the stream goes on
    assert "Traceback" not in served.output()


# -- 4. one version grammar --------------------------------------------------------------------------------

NOT_VERSIONS = ["²", "٣", "01", "+1", " 1", "1_0", "1.0", "0"]


@pytest.mark.parametrize("version", NOT_VERSIONS)
def test_a_version_is_canonical_ascii_digits_on_rest(served, version) -> None:
    base = f"{served.url}/v2/models/italy/versions/{httpx.URL(version).raw_path.decode()}"
    for method, path in (("GET", ""), ("GET", "/ready"), ("GET", "/config"), ("GET", "/stats"),
                         ("POST", "/infer")):
        body = {"inputs": [{"name": "x", "shape": [1, 24, 1], "datatype": "FP32", "data": [0.5] * 24}]}
        response = httpx.request(method, base + path, json=body if method == "POST" else None, headers=AUTH)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["field"] == "version"
    native = httpx.post(f"{served.url}/models/italy/versions/{version}/predict",
                        json={"sequences": [[0.5] * 24]}, headers=AUTH)
    assert native.status_code == 404 and native.json()["error"]["field"] == "version"
    assert httpx.get(f"{served.url}/v2/models/italy/versions/1/ready", headers=AUTH).status_code == 200


@pytest.mark.parametrize("version", NOT_VERSIONS)
def test_a_version_is_canonical_ascii_digits_on_grpc(served, stub, version) -> None:
    metadata = tuple(AUTH.items())
    assert not stub.ModelReady(service_pb2.ModelReadyRequest(name="italy", version=version),
                               metadata=metadata).ready
    request = grpc_infer([1, 24, 1], version=version)
    request.raw_input_contents[0] = b"\0" * 96
    calls = [(stub.ModelInfer, request),
             (stub.ModelMetadata, service_pb2.ModelMetadataRequest(name="italy", version=version)),
             (stub.ModelConfig, service_pb2.ModelConfigRequest(name="italy", version=version)),
             (stub.ModelStatistics, service_pb2.ModelStatisticsRequest(name="italy", version=version))]
    for rpc, message in calls:
        with pytest.raises(grpc.RpcError) as refused:
            rpc(message, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND, rpc
    answer = next(stub.ModelStreamInfer(iter([request]), metadata=metadata))
    assert "no loaded version" in answer.error_message
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name="italy", version="1"), metadata=metadata).ready


# -- 5. unimplemented RPCs, unauthenticated --------------------------------------------------------------

UNSERVED = {"RepositoryIndex": service_pb2.RepositoryIndexRequest(),
            "RepositoryModelLoad": service_pb2.RepositoryModelLoadRequest(model_name="italy"),
            "RepositoryModelUnload": service_pb2.RepositoryModelUnloadRequest(model_name="italy"),
            "SystemSharedMemoryStatus": service_pb2.SystemSharedMemoryStatusRequest(),
            "CudaSharedMemoryRegister": service_pb2.CudaSharedMemoryRegisterRequest(),
            "TraceSetting": service_pb2.TraceSettingRequest(),
            "LogSettings": service_pb2.LogSettingsRequest()}


def test_unserved_rpcs_are_unimplemented_quietly(served, stub) -> None:
    before = len(served.output())
    for method, message in UNSERVED.items():
        for _ in range(20):  # no token, as a flood would come
            with pytest.raises(grpc.RpcError) as refused:
                getattr(stub, method)(message)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
            details = refused.value.details()
            assert details.startswith(f"{method} is not served over gRPC"), details
            assert ("REST" in details) == method.startswith("Repository"), details  # where to go instead
    stub.ServerLive(service_pb2.ServerLiveRequest())  # the log has caught up with the calls
    written = served.output()[before:]
    levels = {json.loads(line)["level"] for line in written.splitlines() if line.strip()}
    assert "Traceback" not in written and levels <= {"info", "debug"}, written[:2000]


# -- 1. bundles are self-contained -----------------------------------------------------------------------

def external_bundle(root, location: str, version: int = 2):
    """italy version `version`: its first initializer kept as external data at `location` (the file is
    written there, and in the working directory, so that onnxruntime would find it)."""
    import hashlib
    import shutil

    import onnx
    from onnx.external_data_helper import set_external_data

    from service.bundle import read_manifest

    bundle = root / "italy" / str(version)
    shutil.copytree(root / "italy" / "1", bundle)
    model = onnx.load(bundle / "model.onnx")
    tensor = model.graph.initializer[0]
    data, tensor.raw_data = onnx.numpy_helper.to_array(tensor).tobytes(), b""
    tensor.ClearField("float_data")
    set_external_data(tensor, location)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    graph = model.SerializeToString()
    (bundle / "model.onnx").write_bytes(graph)
    manifest = read_manifest(bundle)
    onnx_spec = manifest.onnx.model_copy(update={"sha256": hashlib.sha256(graph).hexdigest()})
    manifest = manifest.model_copy(update={"version": version, "onnx": onnx_spec})
    (bundle / "manifest.json").write_text(manifest.to_json())
    return bundle, data


@pytest.mark.parametrize("where", ["relative", "inside", "absolute", "parent", "symlink"])
def test_a_bundle_with_external_data_is_unavailable_with_the_reason(tmp_path, repository, monkeypatch,
                                                                    caplog, where) -> None:
    import shutil

    from service.repository import Repository
    from service.settings import Settings

    root = tmp_path / "repo" / "models"
    shutil.copytree(repository / "italy", root / "italy")
    outside = tmp_path / "elsewhere.bin"
    location = {"relative": "cwd.bin", "inside": "weights.bin", "absolute": str(outside),
                "parent": "../../../elsewhere.bin", "symlink": "link.bin"}[where]
    bundle, data = external_bundle(root, location)
    outside.write_bytes(data)
    (tmp_path / "cwd.bin").write_bytes(data)
    (bundle / "weights.bin").write_bytes(data)
    (bundle / "link.bin").symlink_to(outside)
    monkeypatch.chdir(tmp_path)  # where onnxruntime looked for `cwd.bin`
    repo = Repository(Settings(model_repository=root, version_policy="all"))
    repo.load_all()
    assert repo.versions("italy") == [1]
    entry = next(e for e in repo.index() if e["version"] == "2")
    assert entry["state"] == "UNAVAILABLE" and "external data" in entry["reason"], entry
    assert entry["reason"].startswith("italy/2/manifest.json: model.onnx: 1 tensor(s)"), entry
    assert str(tmp_path) not in entry["reason"] and str(tmp_path) not in caplog.text


def test_the_index_names_files_relative_to_the_repository(tmp_path, repository) -> None:
    import shutil

    root = tmp_path / "models"
    shutil.copytree(repository / "italy", root / "italy")
    external_bundle(root, "cwd.bin")
    shutil.copytree(root / "italy" / "1", root / "italy" / "3")  # a manifest that says version 1
    (root / "italy" / "4").symlink_to(tmp_path)  # out of the repository
    running = Server(root, GRU_VERSION_POLICY="all").start()
    try:
        index = {e["version"]: e for e in httpx.get(f"{running.url}/v2/repository/index").json()
                 if e["name"] == "italy"}
        log = running.output()
    finally:
        running.stop()
    assert index["1"]["state"] == "READY"
    assert [index[v]["state"] for v in "234"] == ["UNAVAILABLE"] * 3
    assert "external data" in index["2"]["reason"] and "italy/3/manifest.json" in index["3"]["reason"]
    assert all(str(tmp_path) not in e["reason"] for e in index.values()), index
    assert str(tmp_path) not in log.replace(f"from {root}", ""), log  # the start-up line names the folder


def test_export_and_import_never_write_a_bundle_with_external_data(tmp_path, repository) -> None:
    import shutil

    from export.bundle import write_bundle
    from service.bundle import read_manifest

    root = tmp_path / "models"
    shutil.copytree(repository / "italy", root / "italy")
    bundle, _ = external_bundle(root, "weights.bin")
    with pytest.raises(ValueError, match="external data"):
        write_bundle(tmp_path / "out", read_manifest(bundle), (bundle / "model.onnx").read_bytes())
    assert not (tmp_path / "out").exists()


# -- 2. idle gRPC streams cannot hold every slot ---------------------------------------------------------

def test_idle_streams_are_closed_and_one_client_cannot_hold_every_slot(repository) -> None:
    import asyncio
    import time

    idle_s = 4.0  # the six idle streams must still be open when the seventh arrives, on a loaded machine too
    # debug: the server logs each stream it admits (and counts), so the test waits for that, not a guess
    running = Server(repository, grpc=True, GRU_MAX_CONNECTIONS="12", GRU_LOG_LEVEL="debug",
                     GRU_GRPC_STREAM_IDLE_S=str(idle_s), GRU_GRPC_MAX_STREAMS_PER_CLIENT="6",
                     GRU_GRPC_MAX_STREAMS_PER_CONNECTION="3").start()
    request = grpc_infer([1, 24, 1])
    request.raw_input_contents[0] = b"\0" * 96

    def admitted_streams() -> int:
        return sum(e["message"] == "gRPC /inference.GRPCInferenceService/ModelStreamInfer 200"
                   for e in running.json_lines())

    async def idle_stream(stub, answer_first: bool = False):
        """A stream that sends (at most) one request and then nothing: how does it end? Its status, its
        answers with the (monotonic) time each came, and when it began and ended."""
        async def requests():
            if answer_first:
                yield request
            await asyncio.sleep(3600)
            yield request
        started, answers = time.monotonic(), []
        try:
            async for answer in stub.ModelStreamInfer(requests()):
                answers.append((time.monotonic(), answer.error_message))
        except grpc.aio.AioRpcError as exc:
            return exc.code(), answers, started, time.monotonic()
        return grpc.StatusCode.OK, answers, started, time.monotonic()

    async def attack():
        own_connection = [("grpc.use_local_subchannel_pool", 1)]  # channels share connections otherwise
        channels = [grpc.aio.insecure_channel(running.grpc_url, own_connection) for _ in range(3)]
        stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels]
        holders = [asyncio.create_task(idle_stream(stubs[i % 2])) for i in range(6)]
        deadline = time.monotonic() + idle_s
        while admitted_streams() < 6 and time.monotonic() < deadline:  # the six are open on the server
            await asyncio.sleep(0.05)
        over = await asyncio.wait_for(idle_stream(stubs[2]), 30)  # a seventh: same client
        live = await stubs[2].ServerLive(service_pb2.ServerLiveRequest(), timeout=30)  # unary calls pass
        # a fourth stream on a connection with three open waits for one of them (in the client) ...
        queued = asyncio.create_task(idle_stream(stubs[0], answer_first=True))
        results = await asyncio.wait_for(asyncio.gather(*holders), idle_s + 60)
        late = await asyncio.wait_for(queued, idle_s + 60)
        for channel in channels:
            await channel.close()
        return over, live, results, late

    try:
        over, live, results, late = asyncio.run(attack())
        assert over[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and live.live
        for code, answers, started, ended in results:  # ... until the idle ones are closed
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED and answers == []
            assert idle_s - 0.05 < ended - started < idle_s + 30  # the server's idle timer, not the test's
        code, answers, _, _ = late
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and len(answers) == 1 and answers[0][1] == ""
        # it waited for a slot on its connection: the server closes none of the holders there (0, 2, 4)
        # before idle_s after the client opened it
        assert answers[0][0] > min(started for _, _, started, _ in results[::2]) + idle_s - 0.05
        assert "Traceback" not in running.output()
    finally:
        running.stop()


# -- 6, 7. duplicate headers, Host -----------------------------------------------------------------------

def raw_answer(server: Server, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Bytes as they are, over a socket; the status and JSON body of the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header, _, payload = data.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload) if payload.startswith(b"{") else {}


BINARY_BODY = b"\0" * 96  # 1 x 24 x 1 float32, or 2 x 12 x 1


@pytest.mark.parametrize("lines, field", [
    (["X-Shape: 1,24,1", "X-Shape: 2,12,1"], "x-shape"),
    (["X-Shape: 2,12,1", "X-Lengths: 12,12", "X-Lengths: 12,11"], "x-lengths"),
    (["X-Shape: 1,24,1", "Content-Type: application/json"], "content-type"),
    (["X-Shape: 1,24,1", f"Authorization: Bearer {TOKEN}"], "authorization"),
    (["X-Shape: 1,24,1", "X-Request-ID: a", "X-Request-ID: b"], "x-request-id"),
    (["X-Shape: 1,24,1", "Host: elsewhere"], "host"),
])
def test_conflicting_duplicate_headers_are_400_naming_the_header(served, lines, field) -> None:
    head = (f"POST /models/italy/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: 96\r\nConnection: close\r\n"
            + "".join(line + "\r\n" for line in lines))
    status, body = raw_answer(served, head, BINARY_BODY)
    assert status == 400 and body["error"]["field"] == field, body
    assert field in body["error"]["message"].lower()


@pytest.mark.parametrize("host_lines", [[], ["Host: a", "Host: b"], ["Host: a", "Host: a"]])
def test_http11_needs_exactly_one_host(served, host_lines) -> None:
    head = "GET /v2/health/ready HTTP/1.1\r\nConnection: close\r\n" + "".join(f"{h}\r\n" for h in host_lines)
    status, body = raw_answer(served, head)
    assert status == 400 and body["field"] == "host", body
    assert raw_answer(served, "GET /v2/health/ready HTTP/1.0\r\n")[0] == 200  # HTTP/1.0 may omit it
    assert raw_answer(served, "GET /v2/health/ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n")[0] == 200


def test_grpc_metadata_the_server_reads_is_given_once(served, stub) -> None:
    twice = {"authorization": (("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer other")),
             "x-request-id": (*AUTH.items(), ("x-request-id", "a"), ("x-request-id", "b"))}
    for key, metadata in twice.items():
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelReady(service_pb2.ModelReadyRequest(name="italy"), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, key
        assert ("gru-error-field", key) in refused.value.trailing_metadata()


# -- 8. gru import: a graph that fails inside onnxruntime --------------------------------------------------

def test_import_of_a_graph_failing_in_onnxruntime_is_one_error_line(tmp_path, capsys) -> None:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from gru_cli import main
    from tests.export.foreign_graphs import classifier

    model = classifier()  # its answer reshaped to rows of 7 values and back: fails at run for 1 sequence
    graph = model.graph
    graph.node[-1].output[0] = "probs_raw"
    graph.initializer.extend([numpy_helper.from_array(np.array([-1, 7], np.int64), "sevens"),
                              numpy_helper.from_array(np.array([-1, 3], np.int64), "threes")])
    graph.node.extend([helper.make_node("Reshape", ["probs_raw", "sevens"], ["probs_7"]),
                       helper.make_node("Reshape", ["probs_7", "threes"], ["probs"])])
    onnx.save(model, tmp_path / "fails.onnx")
    code = main(["import", str(tmp_path / "fails.onnx"), "--name", "fails", "--task", "classification",
                 "--labels", "a,b,c", "--repository", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gru import: error: ") and err.count("\n") == 1, err
    assert "onnxruntime" in err and "Traceback" not in err
    assert not (tmp_path / "models").exists()


# -- 9. gru serve on a port in use -----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["GRU_PORT", "GRU_GRPC_PORT"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_is_one_error_line_before_anything_starts(repository, which, workers) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        env = {**os.environ, "GRU_MODEL_REPOSITORY": str(repository), "GRU_HOST": "127.0.0.1",
               "GRU_PORT": str(free_port()), "GRU_GRPC_PORT": str(free_port()), "GRU_WORKERS": workers,
               which: str(busy)}
        done = subprocess.run([sys.executable, "-m", "gru_cli", "serve"], env=env, capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.startswith("gru serve: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert str(busy) in done.stderr and which in done.stderr
