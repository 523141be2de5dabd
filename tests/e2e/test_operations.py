"""Operations against real server processes: metrics, structured logs with request ids, auth, hot reload
through the folder watch and the admin API, graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.helpers import Server
from tests.service.test_repository import add_version

SEQUENCE = [0.1] * 24


def json_lines(server: Server) -> list[dict]:
    return server.json_lines()


def metric(text: str, name: str, **labels: str) -> float:
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = set(re.findall(r'\w+="[^"]*"', line))
            if wanted <= found:
                return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name} {labels} not in /metrics")


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


def test_metrics_request_ids_and_json_logs(server) -> None:
    ok = httpx.post(f"{server.url}/models/italy/predict", json={"sequences": [SEQUENCE, SEQUENCE]},
                    headers={"x-request-id": "trace-42"})
    assert ok.headers["x-request-id"] == "trace-42"
    bad = httpx.post(f"{server.url}/models/italy/predict", json={"sequences": [[[1, 2]]]})
    generated = bad.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated) and bad.json()["error"]["request_id"] == generated
    unsafe = httpx.get(f"{server.url}/models", headers={"x-request-id": "a b;" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])  # a new id replaces an unsafe one
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, "gru_requests_total", model="italy", version="1", api="native", status="200") >= 1
    assert metric(text, "gru_requests_total", model="italy", version="1", api="native", status="422") >= 1
    assert metric(text, "gru_request_duration_seconds_count", model="italy", api="native") >= 2
    assert metric(text, "gru_sequences_per_request_bucket", model="italy", le="2.0") >= 1
    assert metric(text, "gru_batch_size_count", model="italy", version="1") >= 1
    assert metric(text, "gru_inference_compute_seconds_count", model="italy", version="1") >= 1
    assert metric(text, "gru_model_loaded", model="airline", version="1") == 1
    assert metric(text, "gru_queue_wait_seconds_count", model="italy", version="1") >= 1  # the batcher
    assert metric(text, "gru_queue_depth", model="italy", version="1") == 0  # nothing waits now
    for name in ("gru_streaming_sessions", "gru_requests_in_flight"):
        assert f"# TYPE {name} " in text
    lines = json_lines(server)
    [access] = [e for e in lines if e.get("request_id") == "trace-42" and e["logger"] == "gru_serve.access"]
    assert {"time", "level", "message"} <= set(access)
    assert (access["model"], access["version"], access["status"]) == ("italy", 1, 200)
    assert access["duration_ms"] > 0
    [refused] = [e for e in lines if e.get("request_id") == generated and e["logger"] == "gru_serve.access"]
    assert (refused["status"], refused["error"]) == (422, "invalid_input") and "error" not in access
    assert any("(loopback: only this machine can connect)" in e["message"] for e in lines)


@pytest.fixture
def scratch_repository(tmp_path: Path, repository: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(repository / "italy", root / "italy")
    return root


def test_auth_bearer_tokens(scratch_repository: Path, tmp_path: Path) -> None:
    admin_file = tmp_path / "admin-tokens"
    admin_file.write_text("# one token per line\nadmin-secret\n")
    server = Server(scratch_repository, GRU_API_TOKENS="tok-a, tok-b",
                    GRU_ADMIN_TOKENS_FILE=str(admin_file)).start()
    try:
        url = f"{server.url}/models/italy/predict"

        def post(token: str | None) -> httpx.Response:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return httpx.post(url, json={"sequences": [SEQUENCE]}, headers=headers)

        missing = post(None)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"]["code"] == "unauthorized" and missing.json()["error"]["request_id"]
        assert post("tok-x").status_code == 401
        assert post("tok-b").status_code == 200 and post("admin-secret").status_code == 200
        index = f"{server.url}/v2/repository/index"
        assert httpx.get(index).status_code == 401
        assert httpx.get(index, headers={"authorization": "Bearer tok-a"}).status_code == 403
        assert httpx.get(index, headers={"authorization": "Bearer admin-secret"}).status_code == 200
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # open by default
        assert httpx.get(f"{server.url}/metrics").status_code == 200
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert client.is_server_live()
        x = triton.InferInput("x", [1, 24, 1], "FP32")
        x.set_data_from_numpy(np.zeros((1, 24, 1), np.float32))
        result = client.infer("italy", [x], headers={"Authorization": "Bearer tok-a"})
        assert result.as_numpy("output").shape == (1, 2)
        with pytest.raises(triton.InferenceServerException, match="Bearer"):
            client.infer("italy", [x])
        client.close()
        assert any("bearer token (2 API, 1 admin)" in e["message"] for e in json_lines(server))
    finally:
        server.stop()


def test_hot_reload_admin_api_and_refused_bundles(scratch_repository: Path) -> None:
    server = Server(scratch_repository, GRU_POLL_INTERVAL_S="0.2").start()
    try:
        def serving() -> list[str]:
            return httpx.get(f"{server.url}/v2/models/italy").json().get("versions", [])

        add_version(scratch_repository / "italy", 1, 2)  # the folder watch picks it up
        wait_for(lambda: serving() == ["2"])
        answer = httpx.post(f"{server.url}/models/italy/predict", json={"sequences": [SEQUENCE]}).json()
        assert answer["version"] == 2
        assert httpx.post(f"{server.url}/models/italy/versions/1/predict",
                          json={"sequences": [SEQUENCE]}).status_code == 404  # retired by latest:1
        broken = add_version(scratch_repository / "italy", 1, 3)
        with open(broken / "model.onnx", "ab") as graph:
            graph.write(b"\0")
        wait_for(lambda: any("italy version 3 failed" in e["message"] for e in json_lines(server)))
        assert serving() == ["2"]  # untouched
        index = httpx.post(f"{server.url}/v2/repository/index").json()
        assert {"name": "italy", "version": "3", "state": "UNAVAILABLE"}.items() <= index[-1].items()
        assert "sha256" in index[-1]["reason"]
        load = httpx.post(f"{server.url}/v2/repository/models/italy/load")
        assert load.status_code == 400 and "sha256" in load.json()["error"] and load.json()["serving"] == [2]
        unload = httpx.post(f"{server.url}/v2/repository/models/italy/unload")
        assert unload.json()["unloaded"] == [2]
        assert httpx.get(f"{server.url}/v2/models/italy/ready").status_code == 404
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503  # no model left
        shutil.rmtree(broken)
        load = httpx.post(f"{server.url}/v2/repository/models/italy/load")
        assert load.status_code == 200 and load.json()["serving"] == [2]
        text = httpx.get(f"{server.url}/metrics").text
        assert metric(text, "gru_model_loaded", model="italy", version="2") == 1
        assert metric(text, "gru_model_loaded", model="italy", version="1") == 0
        assert metric(text, "gru_model_load_failures_total", model="italy") >= 1
    finally:
        server.stop()


def test_hot_reload_under_load_fails_no_request(repository: Path) -> None:
    """Every repository fault (scripts/hot_reload_under_load.py), short."""
    script = Path(__file__).parents[2] / "scripts" / "hot_reload_under_load.py"
    out = subprocess.run([sys.executable, str(script), "--repository", str(repository), "--model", "italy",
                          "--case-seconds", "1", "--clients", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("| yes |") == 8 and "0 tracebacks" in out.stdout
    assert "state token -> 422 invalid_state, server-held -> 410 sequence_ended" in out.stdout
    assert "exit code after SIGTERM: 0" in out.stdout


def test_sigterm_finishes_in_flight_requests_and_exits_0(scratch_repository: Path) -> None:
    # The queue holds all four requests' 4,096 sequences (it counts every API's sequences), and admits
    # them however long they would wait: the last waits ~0.9 s behind the others, past the default 500 ms
    # wait limit, which refused it whenever the model's rate had been measured.
    server = Server(scratch_repository, GRU_SHUTDOWN_TIMEOUT_S="30", GRU_MAX_QUEUE_SIZE="4096",
                    GRU_MAX_QUEUE_WAIT_MS="0").start()
    try:
        x = np.random.default_rng(0).normal(size=(1024, 256, 1)).astype("<f4")  # ~0.3 s of compute each
        header = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                         "parameters": {"binary_data_size": x.nbytes}}]}).encode()
        statuses: list[int | str] = []

        def send() -> None:
            try:
                response = httpx.post(f"{server.url}/v2/models/italy/infer", content=header + x.tobytes(),
                                      headers={"inference-header-content-length": str(len(header))},
                                      timeout=60)
                statuses.append(response.status_code)
            except httpx.HTTPError as exc:
                statuses.append(type(exc).__name__)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        in_flight = 0.0

        def busy() -> bool:
            nonlocal in_flight
            in_flight = metric(httpx.get(f"{server.url}/metrics").text, "gru_requests_in_flight")
            return in_flight >= 3

        wait_for(busy, timeout=30)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        assert server.process.wait(timeout=30) == 0
        # Every request in flight at SIGTERM answered 200. One the server had not read yet (still in the
        # kernel's accept queue) may be refused or reset: never an error status.
        assert statuses.count(200) >= in_flight, statuses
        assert set(statuses) <= {200, "ConnectError", "ReadError", "RemoteProtocolError"}, statuses
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/health/live", timeout=2)
    finally:
        server.stop()  # also when an assertion failed before SIGTERM
    assert any(e["message"] == "stopped" for e in json_lines(server))
