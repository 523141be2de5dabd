"""Targeted abuse over real sockets: oversized, truncated, slow, malformed and absurd bodies. Every
answer is a JSON 4xx (or the connection is closed), and the server keeps serving everyone else."""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib

import httpx
import pytest

from bench.run import process_tree_rss
from tests.helpers import Server

GOOD = json.dumps({"sequences": [[0.5] * 24]}).encode()


@pytest.fixture(scope="module")
def server(repository):
    running = Server(repository, GRU_BODY_TIMEOUT_S="1", GRU_MAX_BODY_BYTES="2000000").start()
    yield running
    running.stop()


def raw_request(server: Server, head: str, body: bytes = b"", wait: float = 5.0) -> tuple[int, dict]:
    """Send bytes as they are; return (status, JSON body) of the answer, or (0, {}) if closed silently."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and _complete(data):
                    break
        except TimeoutError:
            pass
    if not data:
        return 0, {}
    header, _, payload = data.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload) if payload else {}


def _complete(data: bytes) -> bool:
    header, _, payload = data.partition(b"\r\n\r\n")
    for line in header.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(payload) >= int(line.split(b":")[1])
    return False


def head(length: int, content_type: str = "application/json", path: str = "/models/italy/predict") -> str:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n")


def assert_serving(server: Server) -> None:
    response = httpx.post(f"{server.url}/models/italy/predict", content=GOOD,
                          headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def test_declared_oversize_is_refused_before_the_body_is_sent(server) -> None:
    started = time.monotonic()
    status, body = raw_request(server, head(10**9))  # 1 GB announced, nothing sent
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert time.monotonic() - started < 2  # answered without waiting for the body
    assert_serving(server)


def test_chunked_oversize_is_cut_off(server) -> None:
    chunk = b"0.1," * 100_000
    response = httpx.post(f"{server.url}/models/italy/predict", headers={"content-type": "application/json"},
                          content=iter([b'{"sequences": [['] + [chunk] * 10 + [b"0.1]]}"]))
    assert response.status_code == 413
    assert_serving(server)


def test_truncated_body_and_slow_client_time_out_with_408(server) -> None:
    started = time.monotonic()
    status, body = raw_request(server, head(len(GOOD)), GOOD[:10])  # promises more than it sends
    assert status == 408 and body["error"]["code"] == "body_timeout"
    assert time.monotonic() - started < 4
    assert_serving(server)


def test_slow_clients_do_not_block_others(server) -> None:
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        for sock in stalled:
            sock.sendall((head(len(GOOD)) + "\r\n").encode() + GOOD[:5])
        for _ in range(5):
            assert_serving(server)
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("content_type, body, status, code", [
    ("application/json", b'{"sequences": [[0.1, 0.2]]}\xc3\x28', 400, "malformed_body"),
    ("application/json", b'{"sequences": [[0.1, 0.2]', 400, "malformed_body"),
    ("application/json", b"[" * 100_000 + b"]" * 100_000, 400, "malformed_body"),
    ("application/json", b'{"sequences": [' + b"[" * 50 + b"1" + b"]" * 50 + b"]}", 422, "invalid_input"),
    ("application/json", b'{"sequences": [[0.1, Infinity]]}', 400, "malformed_body"),
    ("application/json", b'{"sequences": [[0.1, "0.2"]]}', 422, "invalid_input"),
    ("application/json", b'{"sequences": [[0.1]], "extra": true}', 422, "invalid_input"),
    ("application/json", b'{"sequences": [[]]}', 422, "invalid_input"),
    ("application/json", b"", 400, "malformed_body"),
    ("text/plain", GOOD, 415, "unsupported_media_type"),
    ("application/x-www-form-urlencoded", b"sequences=1", 415, "unsupported_media_type"),
    ("multipart/form-data; boundary=x", b"--x--", 415, "unsupported_media_type"),
], ids=["bad-utf8", "truncated-json", "deep-nesting", "nested-50", "infinity", "string", "unknown-field",
        "empty-sequence", "empty-body", "text", "form", "multipart"])
def test_malformed_bodies(server, content_type: str, body: bytes, status: int, code: str) -> None:
    got, answer = raw_request(server, head(len(body), content_type), body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert_serving(server)


def test_million_step_sequence(server) -> None:
    body = b'{"sequences": [[' + b",".join([b"0.5"] * 1_000_000) + b"]]}"  # ~4 MB
    status, answer = raw_request(server, head(len(body)))  # refused before it is sent
    assert status == 413 and "GRU_MAX_BODY_BYTES" in answer["error"]["message"]  # over the 2 MB limit
    small_limit_answer = httpx.post(f"{server.url}/models/italy/predict",
                                    content=b'{"sequences": [[' + b",".join([b"0.5"] * 300_000) + b"]]}",
                                    headers={"content-type": "application/json"})
    assert small_limit_answer.status_code == 422
    assert "steps; this model accepts 1 to" in small_limit_answer.json()["error"]["message"]
    assert_serving(server)


def test_client_that_disconnects_mid_request(server) -> None:
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall((head(len(GOOD)) + "\r\n").encode() + GOOD)
        # closed before reading the answer
    assert_serving(server)
    assert server.process.poll() is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_decoded(server, encoding: str) -> None:
    packed = gzip.compress(GOOD) if encoding == "gzip" else zlib.compress(GOOD)
    response = httpx.post(f"{server.url}/models/italy/predict", content=packed,
                          headers={"content-type": "application/json", "content-encoding": encoding})
    plain = httpx.post(f"{server.url}/models/italy/predict", content=GOOD,
                       headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json() == plain.json()


def test_a_zip_bomb_meets_the_body_limit_not_the_memory(server) -> None:
    """1 GB of zeros gzips to about 1 MB: under the 2 MB wire limit, far over it once decoded."""
    rss_before = process_tree_rss(server.process.pid)
    bomb = gzip.compress(b"0" * (1 << 30), compresslevel=9)
    assert len(bomb) < 2_000_000
    started = time.monotonic()
    status, answer = raw_request(server, head(len(bomb)) + "Content-Encoding: gzip\r\n", bomb)
    assert status == 413 and "once decompressed" in answer["error"]["message"]
    assert time.monotonic() - started < 5
    assert process_tree_rss(server.process.pid) - rss_before < 50 * 2**20  # decoded a slice at a time
    assert_serving(server)


@pytest.mark.parametrize("encoding, body, status, code", [
    ("br", GOOD, 415, "unsupported_content_encoding"),
    ("gzip, gzip", GOOD, 415, "unsupported_content_encoding"),
    ("gzip", b"not gzip at all", 400, "malformed_body"),
    ("gzip", gzip.compress(GOOD)[:-12], 400, "malformed_body"),  # truncated stream
], ids=["brotli", "stacked", "corrupt", "truncated"])
def test_other_encodings_and_broken_streams(server, encoding: str, body: bytes, status: int,
                                            code: str) -> None:
    got, answer = raw_request(server, head(len(body)) + f"Content-Encoding: {encoding}\r\n", body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert "Content-Encoding" in answer["error"]["message"] or status == 400
    assert_serving(server)
