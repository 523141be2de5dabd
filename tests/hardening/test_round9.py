"""Hardening round 9 (HTTP/1.1 framing, paths, backpressure, cardinality, bodies, process): each defect
found, tried the way it was found. docs/guides/limits.md lists them."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest

from bench.run import process_tree_rss
from tests.helpers import Server


@pytest.fixture(scope="module")
def served(repository):
    running = Server(repository).start()
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

