"""Hardening round 9 (HTTP/1.1 framing, paths, backpressure, cardinality, bodies, process): each defect
found, tried the way it was found. docs/guides/limits.md lists them."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import httpx
import pytest

from bench.run import process_tree_rss
from tests.helpers import Server, while_the_queue_is_full


@pytest.fixture(scope="module")
def served(repository):
    running = Server(repository, GRU_BODY_TIMEOUT_S="1").start()
    yield running
    running.stop()


# -- 1. pipelined requests that outrun their answers --------------------------------------------------------

PIPELINED = b"GET /v2/models/italy HTTP/1.1\r\nHost: x\r\n\r\n"


def pipeline_without_reading(port: int, seconds: float) -> socket.socket:
    """A connection that pipelines small GETs for `seconds` (as fast as the server takes them) and reads
    no answer; returned open."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(0.2)
    blob, deadline = PIPELINED * 1000, time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            sock.sendall(blob)
    return sock


def test_pipelined_requests_never_read_hold_no_memory_and_stall_no_one(served) -> None:
    # before: uvicorn parsed every request of each read and read again after each answer, so a client
    # pipelining faster than it was answered queued them all: one connection, 12 s: RSS 121 -> 716 MB,
    # 349,000 requests parsed and 93 answered, a good client's request waited up to 0.9 s. Now at most
    # PIPELINE_LIMIT requests wait parsed per connection; the rest stays unread (TCP holds it)
    rss_before = process_tree_rss(served.process.pid)
    started = time.monotonic()
    sock = pipeline_without_reading(served.port, 3.0)
    try:
        latencies = []
        for _ in range(20):
            began = time.monotonic()
            assert httpx.get(f"{served.url}/v2/models/italy", timeout=5).status_code == 200
            latencies.append(time.monotonic() - began)
        assert max(latencies) < 1.0, latencies
        assert process_tree_rss(served.process.pid) - rss_before < 40 * 2**20  # before: +150 MB in 3 s
    finally:
        sock.close()
    assert time.monotonic() - started < 15


def test_more_pipelined_requests_than_the_limit_are_all_answered_in_order(served) -> None:
    # the held bytes are parsed as answers make room, and a half-close after them still gets every answer
    requests = b"".join(b"GET /v2/models/%s HTTP/1.1\r\nHost: x\r\n\r\n" % name
                        for name in [b"italy", b"airline", b"nope"] * 100)
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(requests)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    statuses = [part[:3] for part in received.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [b"200", b"200", b"404"] * 100
    names = [part.split(b'"name":"')[1].split(b'"')[0] for part in received.split(b"HTTP/1.1 200")[1:]]
    assert names == [b"italy", b"airline"] * 100


def test_a_client_reading_its_pipelined_answers_slowly_is_served_to_the_end(served) -> None:
    # reading paused while bytes are held must resume: 2,000 requests read 64 KB at a time
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(PIPELINED * 2000,))
        sender.start()
        received = b""
        while received.count(b"HTTP/1.1 200 OK\r\n") < 2000:
            received += sock.recv(1 << 16)
        sender.join()


# -- 2. answers sent before the body had all arrived kept the connection ----------------------------------

def trickle_after_answer(port: int, head: bytes, seconds: float = 6.0,
                         unanswered_s: float = 6.0) -> tuple[bytes, float | None]:
    """Send `head` and one byte of its body, then one more byte every 0.2 s: the answer, and how long
    after it the server closed the connection (None: still open after `seconds`, or no answer within
    `unanswered_s`)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + b"{")
        sock.settimeout(0.2)
        began = time.monotonic()
        answer, answered_at, deadline = b"", None, began + seconds
        while time.monotonic() < deadline and (answered_at or time.monotonic() < began + unanswered_s):
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # closed: the send or recv is refused or reset
                chunk = b""
            if not chunk:
                return answer, time.monotonic() - answered_at if answered_at else 0.0
            answer += chunk
            answered_at = answered_at or time.monotonic()
    return answer, None


def body_head(method: bytes, path: bytes, framing: bytes = b"Content-Length: 4000000") -> bytes:
    return (method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing
            + b"\r\n\r\n")


@pytest.mark.parametrize(("head", "status"), [
    (body_head(b"POST", b"/models/italy/predict"), b"408"),
    (body_head(b"POST", b"/models/italy/predict", b"Transfer-Encoding: chunked\r\n\r\nffffff"), b"408"),
    (body_head(b"POST", b"/v2/models/italy/infer"), b"408"),
    (body_head(b"POST", b"/models/italy/stream"), b"408"),
    (body_head(b"POST", b"/models/nope/predict"), b"404"),
    (body_head(b"PUT", b"/models/italy/predict"), b"405"),
])
def test_an_answer_before_the_whole_body_closes_the_connection(served, head, status) -> None:
    # before: the 408 of GRU_BODY_TIMEOUT_S (and a 404 or 405 answered before the body) kept the
    # connection, uvicorn reading and dropping the rest of the body for as long as it came: a client
    # trickling a byte every 2 s held its connection slot for ever (30 s of 30 tried). Now the answer says
    # `connection: close` and the connection is closed
    answer, closed_after = trickle_after_answer(served.port, head)
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    assert b"connection: close" in answer.lower(), answer
    assert closed_after is not None and closed_after < 2.0, closed_after


def test_a_body_sent_whole_after_an_early_answer_keeps_the_connection(served) -> None:
    # the close is only for a body still arriving: a 404 whose small body came with it keeps the connection
    body = b'{"sequences": [[[0.5]]]}'
    request = body_head(b"POST", b"/models/nope/predict", b"Content-Length: %d" % len(body)) + body
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request + PIPELINED)
        received = b""
        while received.count(b"HTTP/1.1 ") < 2:
            received += sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 404") and b"HTTP/1.1 200" in received, received


def test_a_queue_full_refusal_whose_body_never_ends_is_closed_after_the_body_timeout(repository) -> None:
    # before: the transport's own 503 queue_full dropped the body as it came, for as long as it came
    server = Server(repository, GRU_MAX_QUEUE_SIZE="1", GRU_BODY_TIMEOUT_S="1").start()
    try:
        for _ in while_the_queue_is_full(server, "italy", 1024):
            answer, closed_after = trickle_after_answer(
                server.port, body_head(b"POST", b"/models/italy/predict"), unanswered_s=0.05)
            if answer.startswith(b"HTTP/1.1 503"):
                assert closed_after is not None and closed_after < 3.0, closed_after
                return
    finally:
        server.stop()


# -- 4. Upgrade: websocket and h2c --------------------------------------------------------------------------

def upgrade_request(path: bytes, upgrade: bytes) -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: " + upgrade
            + b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")


def test_a_websocket_upgrade_is_served_as_http11_and_nothing_is_logged_for_it(served) -> None:
    # before: uvicorn's WebSocket protocol took `Upgrade: websocket` on every route (health included) and
    # answered an empty text/plain 403, without a request id, an access line or metrics, logging two
    # lines with the client's address; `Upgrade: h2c` logged "Unsupported upgrade request." per request.
    # Now both are served as HTTP/1.1 (this port has no WebSocket endpoints), and logged as any request
    for _ in range(10):
        for upgrade in (b"websocket", b"h2c"):
            ready = exchange(served.port, upgrade_request(b"/v2/health/ready", upgrade))
            assert ready.startswith(b"HTTP/1.1 200"), ready
            missing = exchange(served.port, upgrade_request(b"/nope", upgrade))
            assert missing.startswith(b"HTTP/1.1 404") and b"x-request-id: " in missing, missing
            assert json.loads(missing.partition(b"\r\n\r\n")[2])["error"]["code"] == "not_found", missing
    output = served.output_with('"path":"/nope"')
    assert "Unsupported upgrade" not in output and "WebSocket" not in output and "rejected" not in output


def test_a_request_pipelined_after_an_upgrade_request_is_answered(served) -> None:
    # before: httptools stops at an Upgrade request's headers and uvicorn dropped the rest of the read: a
    # request sent with it got no answer, the connection closed idle after GRU_KEEP_ALIVE_TIMEOUT_S (5 s)
    upgrades = b"".join(upgrade_request(b"/v2/health/ready", upgrade).replace(b", close", b"")
                        for upgrade in (b"h2c", b"websocket"))
    last = PIPELINED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    started = time.monotonic()
    answers = exchange(served.port, upgrades + last)
    assert answers.count(b"HTTP/1.1 200 OK") == 3 and b'"name":"italy"' in answers, answers
    assert time.monotonic() - started < 3


def exchange(port: int, request: bytes) -> bytes:
    """One request (`Connection: close`), its answer read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer
