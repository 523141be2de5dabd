"""The scheduler end to end: concurrent clients of every API against a real `gru serve` process."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from service.bundle import read_manifest
from tests.helpers import Server


def _post(url: str, sequences: list) -> httpx.Response:
    return httpx.post(f"{url}/models/italy/predict", content=json.dumps({"sequences": sequences}),
                      headers={"content-type": "application/json"}, timeout=30)


def test_concurrent_mixed_lengths_equal_each_sequence_alone(server, repository: Path) -> None:
    rng = np.random.default_rng(7)
    requests = [[rng.standard_normal(int(rng.integers(1, 80))).round(4).tolist()
                 for _ in range(int(k % 3) + 1)] for k in range(120)]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda seqs: _post(server.url, seqs), requests))
    session = ort.InferenceSession(str(repository / "italy" / "1" / "model.onnx"))
    size = read_manifest(repository / "italy" / "1").state.size
    for seqs, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        got = np.array([p["probabilities"] for p in response.json()["predictions"]])
        alone = np.concatenate([session.run(None, {"x": np.array(s, np.float32).reshape(1, -1, 1),
                                                   "state": np.zeros((1, size), np.float32),
                                                   "lengths": np.array([len(s)], np.int32)})[0]
                                for s in seqs])
        assert got.shape == alone.shape and np.abs(got - alone).max() <= 1e-5


def _plugged(url: str, stop: threading.Event) -> None:
    """Keep the queue full: one 512-sequence request after another (with GRU_MAX_QUEUE_SIZE=1 and
    GRU_MAX_BATCH_SIZE=1 each runs 512 times alone); every other request meanwhile finds it full."""
    x = np.zeros((512, 256, 1), np.float32)
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError):
            _v2_binary(url, "italy", x, check=False)


def _raw(port: int, head: bytes, body: bytes) -> bytes:
    """Send the headers and part of the body; the rest never comes. Whatever arrives within 3 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(head + body)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


def _exchange(port: int, data: bytes, answers: int) -> bytes:
    """Send `data` on one connection; what arrives until `answers` answers have begun (or 3 s pass)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(data)
        with contextlib.suppress(TimeoutError):
            while received.count(b"HTTP/1.1 ") < answers or not received.endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    return received


def test_a_full_queue_refuses_every_api_at_once_before_the_body(repository: Path) -> None:
    server = Server(repository, GRU_MAX_QUEUE_SIZE="1", GRU_MAX_BATCH_SIZE="1",
                    GRU_ACCESS_LOG="false").start()
    stop = threading.Event()
    plug = threading.Thread(target=_plugged, args=(server.url, stop))
    plug.start()
    steps = [[0.1 * k] for k in range(24)]
    requests = {"/models/italy/predict": {"sequences": [steps]}, "/models/italy/stream": {"steps": steps},
                "/v2/models/italy/infer": {"inputs": [{"name": "x", "shape": [1, 24, 1], "datatype": "FP32",
                                                       "data": [v for [v] in steps]}]}}
    try:
        for path, body in requests.items():
            for _ in range(200):  # a request may slip between two plugs: it is answered; try again
                response = httpx.post(f"{server.url}{path}", json=body, timeout=30)
                if response.status_code == 503:
                    break
                assert response.status_code == 200, response.text
            assert response.status_code == 503 and response.headers["retry-after"] == "1", path
            error = response.json()
            if path.startswith("/v2/"):  # the Open Inference Protocol's error form
                assert error["code"] == "queue_full" and "GRU_MAX_QUEUE_SIZE" in error["error"]
            else:
                assert error["error"]["code"] == "queue_full"
                assert "GRU_MAX_QUEUE_SIZE" in error["error"]["message"]
            # Refused from the headers alone: a body that never finishes gets its 503 at once, not the
            # 408 of GRU_BODY_TIMEOUT_S (10 s).
            head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: 100000\r\n\r\n").encode()
            for _ in range(50):
                answer = _raw(server.port, head, b'{"sequences": [')
                if answer.startswith(b"HTTP/1.1 503"):
                    break
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower(), path
            # Refused by the transport (no ASGI request built): its body dropped, the connection kept for
            # the next request, the caller's request id echoed.
            content = json.dumps(body).encode()
            refused = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"X-Request-Id: shed-{len(path)}\r\nContent-Length: {len(content)}\r\n\r\n").encode()
            then = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(50):
                answers = _exchange(server.port, refused + content + then, 2)
                if answers.startswith(b"HTTP/1.1 503"):
                    break
            assert answers.startswith(b"HTTP/1.1 503") and f"shed-{len(path)}".encode() in answers, answers
            assert answers.count(b"HTTP/1.1 200 OK") == 1, answers
    finally:
        stop.set()
        plug.join()
    try:
        assert httpx.post(f"{server.url}/models/italy/predict", json=requests["/models/italy/predict"],
                          timeout=30).status_code == 200  # and it recovers
        assert httpx.get(f"{server.url}/health/ready").status_code == 200
        deadline = time.monotonic() + 5  # refusals are logged as one summary line per model and second
        while "503 queue_full" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "refused" in server.output() and "503 queue_full" in server.output()
    finally:
        server.stop()


def _v2_binary(url: str, name: str, x: np.ndarray, check: bool = True) -> np.ndarray:
    header = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    response = httpx.post(f"{url}/v2/models/{name}/infer", content=header + x.astype("<f4").tobytes(),
                          headers={"inference-header-content-length": str(len(header)),
                                   "content-type": "application/octet-stream"}, timeout=30)
    if not check and response.status_code != 200:
        return np.empty(0)
    assert response.status_code == 200, response.text
    size = int(response.headers["inference-header-content-length"])
    output = json.loads(response.content[:size])["outputs"][0]
    return np.frombuffer(response.content[size:], "<f4").reshape(output["shape"])


@pytest.fixture(scope="module")
def vowels_server(ragged_repository: Path):
    server = Server(ragged_repository, GRU_ACCESS_LOG="false").start()
    yield server
    server.stop()


def test_every_api_answers_the_same_sequences_identically(vowels_server: Server) -> None:
    """The same sequences through native predict (alone and together, JSON and binary), native stream (one
    chunk; two chunks with a state token; two server-held chunks) and v2 infer (JSON, binary, sequence
    parameters), all at once, so that the scheduler mixes them in its batches: every answer equals
    predict's to 1e-6."""
    url, name = vowels_server.url, "vowels_uni"
    rng = np.random.default_rng(11)
    sequences = [rng.normal(size=(int(n), 12)).astype(np.float32) for n in rng.integers(4, 29, 12)]

    def native(x: np.ndarray) -> np.ndarray:
        response = httpx.post(f"{url}/models/{name}/predict", json={"sequences": [x.tolist()]}, timeout=30)
        assert response.status_code == 200, response.text
        return np.array(response.json()["predictions"][0]["probabilities"])

    def together(_: np.ndarray) -> list[np.ndarray]:
        response = httpx.post(f"{url}/models/{name}/predict",
                              json={"sequences": [x.tolist() for x in sequences]}, timeout=30)
        return [np.array(p["probabilities"]) for p in response.json()["predictions"]]

    def binary(x: np.ndarray, lengths: list[int] | None = None) -> list[np.ndarray]:
        headers = {"content-type": "application/octet-stream", "x-shape": ",".join(map(str, x.shape))}
        if lengths:
            headers["x-lengths"] = ",".join(map(str, lengths))
        response = httpx.post(f"{url}/models/{name}/predict", content=x.astype("<f4").tobytes(),
                              headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return [np.array(p["probabilities"]) for p in response.json()["predictions"]]

    def together_binary(_: np.ndarray) -> list[np.ndarray]:
        padded = np.full((len(sequences), max(map(len, sequences)), 12), np.nan, np.float32)  # never read
        for i, x in enumerate(sequences):
            padded[i, : len(x)] = x
        return binary(padded, [len(x) for x in sequences])

    def stream(x: np.ndarray, cut: int | None = None, held: str | None = None) -> np.ndarray:
        chunks = [x] if cut is None else [x[:cut], x[cut:]]
        state = None
        for i, chunk in enumerate(chunks):
            body: dict = {"steps": chunk.tolist()}
            if held:
                body |= {"sequence_id": held, "start": i == 0, "end": i == len(chunks) - 1}
            elif state:
                body["state"] = state
            response = httpx.post(f"{url}/models/{name}/stream", json=body, timeout=30)
            assert response.status_code == 200, response.text
            state = response.json().get("state")
        return np.array(response.json()["prediction"]["probabilities"])

    def v2_json(x: np.ndarray, sequence_id: int | None = None) -> np.ndarray:
        chunks = [x] if sequence_id is None else [x[:2], x[2:]]
        for i, chunk in enumerate(chunks):
            body: dict = {"inputs": [{"name": "x", "shape": [1, *chunk.shape], "datatype": "FP32",
                                      "data": chunk.ravel().tolist()}]}
            if sequence_id is not None:
                body["parameters"] = {"sequence_id": sequence_id, "sequence_start": i == 0,
                                      "sequence_end": i == len(chunks) - 1}
            response = httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=30)
            assert response.status_code == 200, response.text
        return np.array(response.json()["outputs"][0]["data"])

    ways = {"native": native, "native binary": lambda x: binary(x[None])[0], "stream": stream,
            "stream in two chunks": lambda x: stream(x, cut=3),
            "server-held stream": lambda x: stream(x, cut=2, held=f"s{id(x)}"), "v2 json": v2_json,
            "v2 binary": lambda x: _v2_binary(url, name, x[None])[0],
            "v2 sequence": lambda x: v2_json(x, sequence_id=id(x) % 2**31 + 1)}
    several = {"together": together, "together binary": together_binary}
    jobs = [(way, i) for way in ways for i in range(len(sequences))] + [(way, 0) for way in several]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda job: (ways | several)[job[0]](sequences[job[1]]), jobs))
    got = dict(zip(jobs, answers, strict=True))
    for i in range(len(sequences)):
        expected = got[("native", i)]
        for way in ways:
            assert np.abs(got[(way, i)] - expected).max() <= 1e-6, (way, i)
        for way in several:
            assert np.abs(got[(way, 0)][i] - expected).max() <= 1e-6, (way, i)


def test_binary_headers_on_a_json_body_are_refused(vowels_server: Server) -> None:
    """X-Shape / X-Lengths describe a binary body: on a JSON one they are a client's mistake, named."""
    for header in ("X-Shape", "X-Lengths"):
        response = httpx.post(f"{vowels_server.url}/models/vowels_uni/predict", headers={header: "1,4,12"},
                              json={"sequences": [[[0.0] * 12] * 4]}, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == header.lower()
