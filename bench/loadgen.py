"""An HTTP/1.1 load generator for the hardening scripts: open loop (a fixed request rate, whatever the
server answers) or closed loop (N connections, each sending again when answered), one record per request.

wrk is closed-loop only and reports one summary; an overload test needs a fixed offered rate above
capacity and a timeline. This sends one pre-built POST on keep-alive connections (asyncio protocols on
uvloop, a few microseconds per request), opening more connections when all are busy, and records each
request's send time, latency and outcome. Latency runs from the write to the last byte of the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import numpy as np

# 200; 503/429 queue_full with Retry-After; another status; a socket error or no answer by the end;
# never sent because all `max_connections` connections were waiting for answers
OK, REFUSED, OTHER, ERROR, UNSENT = 0, 1, 2, 3, 4
KIND_NAMES = ("ok", "refused", "other", "error", "unsent")
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Body:
    """A request body and its headers (Content-Length is added)."""

    content: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


@dataclass(frozen=True)
class Phase:
    """`rate`: open loop at this many requests/s; else closed loop with `connections` connections."""

    name: str
    seconds: float
    rate: float | None = None
    connections: int = 32


@dataclass
class Records:
    sent: list[float] = field(default_factory=list)  # seconds since the run started
    latency: list[float] = field(default_factory=list)  # seconds
    kind: list[int] = field(default_factory=list)
    phase: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)  # the `other` answers by status
    examples: dict[int, str] = field(default_factory=dict)  # the first `other` answer's body per status
    unanswered: int = 0  # still in flight when the run ended (counted as errors too)
    unsent: int = 0  # open loop: every connection was waiting for an answer
    connections_opened: int = 0
    max_lag_s: float = 0.0  # open loop: how far the sender fell behind its schedule

    def add(self, sent: float, latency: float, kind: int, phase: int) -> None:
        self.sent.append(sent)
        self.latency.append(latency)
        self.kind.append(kind)
        self.phase.append(phase)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"sent": np.array(self.sent), "latency": np.array(self.latency),
                "kind": np.array(self.kind, dtype=np.int8), "phase": np.array(self.phase, dtype=np.int16)}


class _Connection(asyncio.Protocol):
    def __init__(self, generator: LoadGenerator):
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent_at: float | None = None
        self.phase = 0
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.open = cast(asyncio.Transport, transport), True  # uvloop's is no subclass

    def send(self, phase: int) -> None:
        assert self.transport is not None
        self.phase, self.sent_at = phase, time.perf_counter()
        self.transport.write(self.generator.next_request())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.sent_at is None:
            return
        match = CONTENT_LENGTH.search(self.buffer, 0, end + 2)
        total = end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buffer) < total:
            return
        latency = time.perf_counter() - self.sent_at
        status = int(self.buffer[9:12])
        head, body = bytes(self.buffer[:end]).lower(), bytes(self.buffer[end + 4:total])
        del self.buffer[:total]
        sent_at, self.sent_at = self.sent_at, None
        self.generator.answered(self, sent_at, latency, status, head, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.generator.lost(self)


class Driver(ABC):
    """The phases' schedule, whatever the protocol: a subclass sends one request (`_send_one`, which
    sends again on an answer while `_closed_loop_until` is ahead), counts those in flight and waits for
    the stragglers at the end (`_finish`, which records the unanswered)."""

    def __init__(self) -> None:
        self.records = Records()
        self._closed_loop_until = 0.0
        self._phase = 0
        self._start = 0.0

    async def run(self, phases: list[Phase], drain_timeout: float = 15.0) -> Records:
        """Run the phases back to back on one connection pool; wait for the stragglers at the end."""
        self._start = time.perf_counter()
        for index, phase in enumerate(phases):
            self._phase = index
            if phase.rate is None:
                await self._closed_loop(phase)
            else:
                await self._open_loop(phase)
        self._closed_loop_until = 0.0
        await self._finish(drain_timeout)
        return self.records

    async def _open_loop(self, phase: Phase) -> None:
        assert phase.rate is not None
        started = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - started) < phase.seconds:
            due = int(elapsed * phase.rate) - sent
            if due > 1:
                self.records.max_lag_s = max(self.records.max_lag_s, due / phase.rate)
            for _ in range(due):
                self._send_one()
            sent += due
            # uvloop's timers have millisecond resolution: a shorter sleep would spin a core.
            await asyncio.sleep(max(0.001, (sent + 1) / phase.rate - elapsed))

    async def _closed_loop(self, phase: Phase) -> None:
        self._closed_loop_until = time.perf_counter() + phase.seconds
        for _ in range(phase.connections - self._in_flight()):  # those in flight carry on in this phase
            self._send_one()
        await asyncio.sleep(phase.seconds)
        self._closed_loop_until = 0.0

    @abstractmethod
    def _send_one(self) -> None: ...

    @abstractmethod
    def _in_flight(self) -> int: ...

    @abstractmethod
    async def _finish(self, drain_timeout: float) -> None: ...

    def _record(self, sent_at: float, latency: float, kind: int, phase: int) -> None:
        self.records.add(sent_at - self._start, latency, kind, phase)


class LoadGenerator(Driver):
    def __init__(self, host: str, port: int, path: str, bodies: list[Body], max_connections: int = 1024):
        """`bodies`: sent in turn (one body, or several to vary lengths and sequence counts)."""
        super().__init__()
        self.host, self.port, self.max_connections = host, port, max_connections
        self.requests = [self._head(path, body) + body.content for body in bodies]
        self._next = 0
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()
        self._connecting = 0

    def _head(self, path: str, body: Body) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 *(f"{name}: {value}" for name, value in body.headers),
                 f"Content-Length: {len(body.content)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _finish(self, drain_timeout: float) -> None:
        deadline = time.perf_counter() + drain_timeout
        while self._in_flight() and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self._all):
            if connection.sent_at is not None:
                self.records.unanswered += 1
                self._record(connection.sent_at, time.perf_counter() - connection.sent_at, ERROR,
                             connection.phase)
            if connection.transport is not None:
                connection.transport.close()

    def _in_flight(self) -> int:
        return sum(c.sent_at is not None for c in self._all) + self._connecting

    def _send_one(self) -> None:
        while self._idle:
            connection = self._idle.popleft()  # FIFO: every connection stays in use (keep-alive timeouts)
            if connection.open:
                connection.send(self._phase)
                return
        if len(self._all) + self._connecting >= self.max_connections:
            self.records.unsent += 1
            self._record(time.perf_counter(), 0.0, UNSENT, self._phase)
            return
        self._connecting += 1
        asyncio.get_running_loop().create_task(self._connect_and_send(self._phase))

    async def _connect_and_send(self, phase: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self._record(time.perf_counter(), 0.0, ERROR, phase)
            return
        finally:
            self._connecting -= 1
        self.records.connections_opened += 1
        self._all.add(connection)
        connection.send(phase)

    def next_request(self) -> bytes:
        self._next = (self._next + 1) % len(self.requests)
        return self.requests[self._next]

    def answered(self, connection: _Connection, sent_at: float, latency: float, status: int, head: bytes,
                 body: bytes) -> None:
        if status == 200:
            kind = OK
        elif status in (429, 503) and b"\r\nretry-after:" in head and b'"queue_full"' in body:
            kind = REFUSED
        else:
            kind = OTHER
            self.records.statuses[status] = self.records.statuses.get(status, 0) + 1
            self.records.examples.setdefault(status, (head + b"\n\n" + body)[:400].decode("latin-1"))
        self._record(sent_at, latency, kind, connection.phase)
        if b"\r\nconnection: close" in head:
            return
        if time.perf_counter() < self._closed_loop_until:
            connection.send(self._phase)
        else:
            self._idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        self._all.discard(connection)
        if connection.sent_at is not None:  # an answer never came: an error; idle closes are not
            latency = time.perf_counter() - connection.sent_at
            self._record(connection.sent_at, latency, ERROR, connection.phase)
            connection.sent_at = None


def generate(url: str, bodies: list[bytes] | list[Body], phases: list[Phase],
             max_connections: int = 1024) -> Records:
    """POST the bodies (bytes: JSON) to `url` (http://host:port/path) through the phases."""
    parts = urlsplit(url)
    given = [b if isinstance(b, Body) else Body(b) for b in bodies]
    generator = LoadGenerator(parts.hostname or "127.0.0.1", parts.port or 80, parts.path, given,
                              max_connections)
    return run_loop(generator.run(phases))


def run_loop(run: Coroutine[None, None, Records]) -> Records:
    """`run` in a fresh event loop: uvloop when installed, as uvicorn uses it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run)
    with contextlib.closing(uvloop.new_event_loop()) as loop:
        return loop.run_until_complete(run)


def percentile_ms(latency: np.ndarray, q: float) -> float | None:
    return float(np.percentile(latency, q) * 1e3) if latency.size else None
