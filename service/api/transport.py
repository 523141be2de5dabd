"""The limits only the HTTP server can enforce, for uvicorn: an ASGI app sees a request only once its
headers are complete, and never sees a connection. `gru serve` runs uvicorn with this protocol class
(`--http service.api.transport:LimitedHttpToolsProtocol` when running uvicorn by hand).

- Headers that never end: httptools keeps an unfinished header value in memory without a bound. Here a
  request whose header block is still incomplete after GRU_MAX_HEADER_BYTES bytes gets 431 and is closed.
- Trailer fields (after a chunked body's last chunk): read and dropped, never merged into the request's
  headers (RFC 9110 6.5.1; uvicorn appended them, so a trailer `X-Shape` set the shape unseen by the
  checks made on the headers); past GRU_MAX_HEADER_BYTES of them 431, closed. httptools grows an unfinished
  trailer value by copying it: one endless trailer took 100 MB and stalled the worker for 12 s.
- Slow headers: a request whose headers are not complete GRU_HEADER_TIMEOUT_S after it began (or after
  its connection opened) gets 408 and is closed; a connection that sent nothing is simply closed.
- Open connections: past GRU_MAX_CONNECTIONS per worker, a new connection is answered 503
  too_many_connections (Retry-After) and closed (when REFUSAL_SLOTS of them are being answered already,
  closed without an answer); refusals are logged at most once per 10 s. The open-files limit is raised
  to fit (fit_file_limit), or the cap lowered to what the hard limit allows, with a warning.
- Idle keep-alive connections: uvicorn's timeout_keep_alive (GRU_KEEP_ALIVE_TIMEOUT_S).
- Half-closed connections: the requests a client sent whole before shutdown(SHUT_WR) are answered.
- Answers before the body: a request answered before all of its body arrived (404, 405, a 408 body
  timeout) is closed after its answer (close_if_answered_before_body), not kept to drop a body that may
  never end.
- Pipelined requests: at most PIPELINE_LIMIT parsed and waiting behind the one being answered; the bytes
  after them are held unparsed, with reading paused, until an answer makes room. uvicorn parsed every
  request in each read and read again after each answer: one connection pipelining small GETs faster
  than they were answered grew the worker by 600 MB in 12 s (a good client's request waited up to 1 s).
- Malformed HTTP: a JSON 400 instead of uvicorn's plain text.
- Load shedding: once a request's headers are parsed, the app's shedder (`install_shedder`: LoadShedder's
  `refusal`) may answer it at once (503 queue_full), before uvicorn builds a request and starts a task
  for it; its body is read and dropped, the connection kept. A refusal then costs a share of what a
  refusal by the ASGI app costs, on the event loop that an overload saturates (measured: bench/overload.py).

The header count and size of complete header blocks, the body limits and Content-Encoding are enforced in
ASGI (service/api/limits.py) for every server. Another server must be given these equivalents (granian:
--http1-header-read-timeout, --http1-max-buffer-size, --backpressure); the tests in
tests/hardening/test_http_limits.py say what must hold.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from service import metrics
from service.api.errors import raw_error_response
from service.errors import RETRY_AFTER_S
from service.settings import Settings

log = logging.getLogger("gru_serve.transport")
RESERVED_FILES = 64  # per worker besides connections: listening socket, event loop, logs, metrics, models
REFUSAL_SLOTS = 64  # connections over the cap being answered 503 at one time; past it they are just closed
LINGER_S = 1.0  # after a refusal: time for the client to read it before the socket is closed
DISCARD_LIMIT = 1 << 20  # bytes read and dropped after a refusal before reading stops
LOG_INTERVAL_S = 10.0
PIPELINE_LIMIT = 16  # requests parsed and waiting behind the one being answered, per connection
FEED_SLICE = 4096  # bytes parsed at a time: one read of tiny requests passes PIPELINE_LIMIT by little
PROTOCOL = "service.api.transport:LimitedHttpToolsProtocol"  # uvicorn's `http` (importable by each worker)


@dataclass(frozen=True)
class TransportLimits:
    max_header_bytes: int
    max_header_count: int
    header_timeout_s: float
    max_connections: int
    body_timeout_s: float


@functools.cache
def transport_limits() -> TransportLimits:
    """From the environment, like the app: worker processes get their settings through it."""
    s = Settings()
    return TransportLimits(s.max_header_bytes, s.max_header_count, s.header_timeout_s, s.max_connections,
                           s.body_timeout_s)


class RateLimitedLog:
    """The first refusal of a kind is logged at once; later ones are counted and summed up once per
    `interval_s`, so that an attack cannot flood the log."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S):
        self.interval_s, self.pending, self.latest = interval_s, 0, ""
        self.window: asyncio.TimerHandle | None = None

    def note(self, loop: asyncio.AbstractEventLoop, message: str) -> None:
        if self.window is None:
            log.warning("%s (more of these are summed up every %g s)", message, self.interval_s)
            self.window = loop.call_later(self.interval_s, self._close_window, loop)
        else:
            self.pending, self.latest = self.pending + 1, message

    def _close_window(self, loop: asyncio.AbstractEventLoop) -> None:
        self.window = None
        if self.pending:
            log.warning("%d more like this in the last %g s; the latest: %s", self.pending, self.interval_s,
                        self.latest)
            self.pending = 0
            self.window = loop.call_later(self.interval_s, self._close_window, loop)


REFUSALS: dict[str, RateLimitedLog] = defaultdict(RateLimitedLog)  # per error code
REFUSED: set[asyncio.Protocol] = set()  # over the cap, answered 503, closing (at most REFUSAL_SLOTS)


class TooManyHeaders(Exception):
    pass


Shedder = Callable[[bytes, str, list[tuple[bytes, bytes]]], "bytes | None"]  # method, path, headers -> answer
SHEDDER: list[Shedder] = []  # the worker's app's, at most one (install_shedder)


def install_shedder(shedder: Shedder) -> None:
    """The app's shedder, asked for every request once its headers are parsed (one app per worker)."""
    SHEDDER[:] = [shedder]


class Answered:
    """The cycle of a request the transport answered itself: complete, so uvicorn drops its body."""

    response_complete, disconnected, keep_alive = True, False, True

    class message_event:  # noqa: N801 (uvicorn's cycle attribute)
        @staticmethod
        def set() -> None:
            pass


ANSWERED = Answered()


class Corked:
    """A transport whose writes made in one turn of the event loop go out as one: uvicorn writes an
    answer's head and its body separately, and each write to a socket is a send (on loopback, a trip
    through the network stack: measured under load, the head's write alone was 13 % of the main thread)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport, self.loop = transport, loop
        self.pending: list[bytes] = []
        self.ended = False  # write_eof called: a late write would raise in the transport

    def write(self, data: bytes) -> None:
        if self.ended:
            return
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)

    def flush(self) -> None:
        if self.pending:
            data, self.pending = b"".join(self.pending), []
            if not self.transport.is_closing():
                self.transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self.ended = True
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else: the transport's own
        return getattr(self.transport, name)


class HoldingFlow(FlowControl):
    """uvicorn's flow control, except that reading stays paused while the protocol holds bytes it has not
    parsed (a full pipeline): uvicorn resumes reading after each answer and whenever an app reads its
    body, and each resumption would let one more read be held."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpToolsProtocol):
        super().__init__(transport)
        self.protocol = protocol

    def resume_reading(self) -> None:
        if not self.protocol.held:
            super().resume_reading()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = transport_limits()
        self.awaiting_headers = True  # from the connection's start or a request's first byte to its headers
        self.request_began = False
        self.header_bytes = 0  # bytes received while the header block was incomplete
        self.trailing, self.trailer_bytes = False, 0  # a chunk header parsed, no body since: the trailers
        self.header_timer: asyncio.TimerHandle | None = None
        self.shed_body_timer: asyncio.TimerHandle | None = None  # a shed request's body, still arriving
        self.refused, self.discarded = False, 0
        self.corked: Corked | None = None
        self.held: bytes | memoryview = b""  # received, not parsed: the pipeline is full (reading paused)
        self.feeding, self.client_eof = False, False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = HoldingFlow(transport, self)
        cap = self.limits.max_connections
        if len(self.connections) > cap:
            self.connections.discard(self)  # not served: it leaves the count, and waits in REFUSED
            message = f"the server has {cap} connections open (GRU_MAX_CONNECTIONS); retry after " \
                      f"{RETRY_AFTER_S} s"
            if len(REFUSED) >= REFUSAL_SLOTS:  # no file descriptors to spare for answers: just close
                REFUSALS["too_many_connections"].note(self.loop, f"too_many_connections: {message}")
                metrics.CONNECTIONS_REFUSED.labels("too_many_connections").inc()
                transport.close()
                return
            REFUSED.add(self)
            self._refuse("too_many_connections", message, headers={"retry-after": str(RETRY_AFTER_S)})
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_shed_body_timer()
        REFUSED.discard(self)
        super().connection_lost(exc)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol's: True keeps writing
        """The client half-closed (shutdown(SHUT_WR), `nc -N`): the requests it sent whole are answered,
        then the connection closes. uvicorn closed it at once: the answer was computed, never sent."""
        if self.corked is not None:  # an answer written this turn of the loop goes before the close: the
            # test of three pipelined requests once got two answers (CI), the third left in the cork
            self.corked.flush()
        self.client_eof = True
        if self.held:
            return True  # requests not parsed yet: decided once they are (on_response_complete)
        last = self.pipeline[0][0] if self.pipeline else self.cycle
        if last is None or last.response_complete or last.more_body:
            return False  # nothing whole left to answer: closed now
        last.keep_alive = False  # closed once its answer is written (a partial request after it is dropped)
        return True

    def data_received(self, data: bytes | memoryview) -> None:
        if self.refused:  # the answer is written; what follows is dropped until the client closes
            self.discarded += len(data)
            if self.discarded > DISCARD_LIMIT:
                self.transport.pause_reading()  # junk without end: TCP holds the rest until LINGER_S
            return
        if self.held or self._pipeline_full():
            self._hold(data)
            return
        self._unset_keepalive_if_required()
        self.feeding = True
        try:
            self._parse_slices(data)
        finally:
            self.feeding = False
        if self.awaiting_headers and self.header_bytes > self.limits.max_header_bytes and not self.refused:
            limit = self.limits.max_header_bytes
            self._refuse("headers_too_large", f"the request's headers passed {limit} bytes unfinished "
                         "(GRU_MAX_HEADER_BYTES)", path=self._path())

    def _parse_slices(self, data: bytes | memoryview) -> None:
        view = memoryview(data)  # slices without copies: held bytes are parsed again after each answer
        for start in range(0, len(view), FEED_SLICE):
            if self._pipeline_full():
                self._hold(view[start:])
                return
            if not self._parse(view[start:start + FEED_SLICE]):
                return

    def _pipeline_full(self) -> bool:
        return len(self.pipeline) >= PIPELINE_LIMIT

    def _hold(self, data: bytes | memoryview) -> None:
        self.held = bytes(self.held) + data if self.held else data
        self.flow.pause_reading()  # resumed once nothing is held (HoldingFlow)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # the next pipelined request starts: room for one more
        if self.held and not self.feeding and not self.transport.is_closing():
            data, self.held = self.held, b""
            self.data_received(data)
            if self.held:
                return
            self.flow.resume_reading()
            if self.client_eof and not self.eof_received():
                self.transport.close()

    def _parse(self, data: memoryview) -> bool:
        """Feed `data` to the parser; False when the rest of the read must not be parsed (refused)."""
        if self.awaiting_headers:
            self.header_bytes += len(data)
        trailing = self.trailing
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            if self._declares_body():
                self._refuse_upgrade_with_body()
            return False
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, TooManyHeaders):
                limit = self.limits.max_header_count
                self._refuse("headers_too_large", f"the request has more than {limit} header fields "
                             "(GRU_MAX_HEADER_COUNT)", path=self._path())
            elif isinstance(exc.__context__, httptools.HttpParserInvalidURLError):
                self._refuse_url(exc.__context__)
            else:
                log.exception("parsing a request failed", exc_info=exc.__context__)
                self._refuse("malformed_request", "the request could not be parsed", path=self._path())
        except httptools.HttpParserError as exc:
            self._refuse("malformed_request", f"the bytes received are not a valid HTTP/1.1 request: {exc}",
                         path=self._path())
        if trailing and self.trailing and not self.refused:  # all of `data` was trailer fields
            self._count_trailer(len(data))
        return not self.refused

    def _feed(self, data: memoryview) -> None:
        """The parser's feed_data, parsing on after an Upgrade request without a body: it is served as
        HTTP/1.1 (no WebSocket endpoints, service/cli.py: ws "none"; docs/guides/limits.md) and logged as
        any request. httptools stops at its headers; uvicorn dropped the rest of the read, so a request
        pipelined after it was never answered, and warned "Unsupported upgrade request." per request."""
        while True:
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as exc:
                consumed = exc.args[0] if exc.args else 0
                if self._declares_body() or not consumed:
                    raise
                data = data[consumed:]

    def _count_trailer(self, size: int) -> None:
        self.trailer_bytes += size
        if self.trailer_bytes > self.limits.max_header_bytes:
            self._refuse("headers_too_large", f"the request's trailer fields (after its chunked body) passed "
                         f"{self.limits.max_header_bytes} bytes (GRU_MAX_HEADER_BYTES); they are not read: "
                         "send what they carry as headers", path=self._path())

    def on_chunk_header(self) -> None:  # a last chunk's (size 0) is followed by the trailers
        self.trailing, self.trailer_bytes = True, 0

    def on_body(self, body: bytes) -> None:
        self.trailing = False
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self.trailing = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.awaiting_headers:  # a trailer field: dropped (see the module's docstring)
            return
        if len(self.headers) >= self.limits.max_header_count:
            raise TooManyHeaders  # stops the parser: 10,000 headers cost the same as 101
        super().on_header(name, value)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.awaiting_headers = self.request_began = True
        if self.header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self.awaiting_headers = self.request_began = False
        self.header_bytes = 0
        self._cancel_header_timer()
        if SHEDDER and (self.cycle is None or self.cycle.response_complete) and self._shed():
            return
        super().on_headers_complete()
        if self.cycle is not None:  # the answer's writes, corked (see Corked)
            self.corked = self.corked or Corked(self.transport, self.loop)
            self.cycle.transport = self.corked  # type: ignore[assignment]
            if self._declares_body():
                close_if_answered_before_body(self.cycle)

    def _shed(self) -> bool:
        """Answer the request now if the app's shedder refuses it (not a pipelined one: it waits its turn)."""
        answer = SHEDDER[0](self.parser.get_method(), self._path(), self.headers)
        if answer is None:
            return False
        self.cycle = ANSWERED  # type: ignore[assignment]
        out = self.corked or self.transport  # after the previous answer's corked writes, if any
        out.write(answer)
        if not self.parser.should_keep_alive() or self.expect_100_continue:  # see close_if_answered_...
            out.close()
            return True
        if self._declares_body():  # dropped as it arrives, for GRU_BODY_TIMEOUT_S at most (a body trickled
            # after a 503 held the connection for ever)
            self.shed_body_timer = self.loop.call_later(self.limits.body_timeout_s, self.transport.close)
        self.on_response_complete()  # keep-alive timer, next pipelined request: as after any answer
        return True

    def on_message_complete(self) -> None:
        self._cancel_shed_body_timer()
        super().on_message_complete()

    def _cancel_shed_body_timer(self) -> None:
        if self.shed_body_timer is not None:
            self.shed_body_timer.cancel()
            self.shed_body_timer = None

    def _refuse_url(self, exc: Exception) -> None:
        """A URL httptools cannot split (`http://a:b/`, over 64 KiB): the client's error, not a traceback."""
        limit = self.limits.max_header_bytes
        if len(self.url) > limit:
            self._refuse("headers_too_large", f"the request's URL is {len(self.url)} bytes, over the {limit} "
                         "bytes of the request line and headers (GRU_MAX_HEADER_BYTES)")
        else:
            self._refuse("malformed_request", f"the request's URL is not valid: {exc}")

    def _declares_body(self) -> bool:
        return any(name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0 \t"))
                   for name, value in self.headers)

    def _refuse_upgrade_with_body(self) -> None:
        """httptools stops at the headers of an Upgrade request (e.g. `curl --http2` on http://, Java's
        RestClient: `Upgrade: h2c`) and would hand the app an empty body, then parse the body as the next
        request (uvicorn issue #2722): refuse it by name instead of answering about a body never read."""
        # CONNECT has no Upgrade header
        upgrade = (dict(self.headers).get(b"upgrade") or self.parser.get_method()).decode("latin-1")
        self._refuse("malformed_request", f"the request asks to switch protocols ({upgrade}) and carries a "
                     "body; this port speaks HTTP/1.1 only: send it without the Upgrade header (curl: "
                     "--http1.1; HTTP/2 is gRPC, on its own port)", path=self._path())

    def _arm_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_header_timer()  # a pipelined request waits for the one being answered
            return
        if not self.request_began:  # an idle connection: nothing to answer
            self.transport.close()
            return
        timeout = self.limits.header_timeout_s
        self._refuse("header_timeout", f"the request's headers did not arrive within {timeout:g} s "
                     "(GRU_HEADER_TIMEOUT_S)", path=self._path())

    def _path(self) -> str:
        return (getattr(self, "url", b"") or b"").split(b"?")[0].decode("latin-1")

    def _refuse(self, code: str, message: str, path: str = "",
                headers: dict[str, str] | None = None) -> None:
        """Answer once, stop parsing, close when the client has read the answer (or after LINGER_S)."""
        self.refused = True
        self._cancel_header_timer()
        REFUSALS[code].note(self.loop, f"{code}: {message}")
        metrics.CONNECTIONS_REFUSED.labels(code).inc()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # an app still running must not write after this answer
            self.cycle.message_event.set()
        out = self.corked or self.transport  # after an answer's corked writes, if any, never before
        if out.is_closing():
            return
        out.write(raw_error_response(code, message, path, headers))
        if out.can_write_eof():
            out.write_eof()  # the client reads the answer, then EOF, and closes its side
        self.loop.call_later(LINGER_S, self.transport.close)


def close_if_answered_before_body(cycle: RequestResponseCycle) -> None:
    """A request answered before all of its body arrived (404, 401, 405, 415, a 408 body timeout, a 413
    mid-body) says `connection: close` and is closed after its answer (RFC 9112 9.6). Kept alive, uvicorn
    read and dropped the rest of the body for as long as it came: a client trickling a byte every 2 s
    held its connection (and its GRU_MAX_CONNECTIONS slot) for ever past the 408 that GRU_BODY_TIMEOUT_S
    promised, and a 404 or 405 had no timeout at all. With `Expect: 100-continue` no 100 Continue went
    out, so the client may never send the body (curl does not): kept alive, the connection would read the
    client's next request as that body and never answer it."""
    send = cycle.send

    async def send_closing(message: Any) -> None:  # uvicorn's ASGISendEvent
        if message["type"] == "http.response.start" and cycle.more_body:
            cycle.keep_alive = False  # uvicorn then says connection: close, and closes after the answer
        await send(message)

    cycle.send = send_closing  # type: ignore[method-assign]  # run_asgi hands cycle.send to the app


def fit_file_limit(max_connections: int) -> int:
    """Raise the soft open-files limit (worker processes inherit it) so that `max_connections` fit, up
    to the hard limit; return the connection cap that does fit, with a warning if it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + REFUSAL_SLOTS + RESERVED_FILES
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target >= needed:
        return max_connections
    fitted = max(1, target - REFUSAL_SLOTS - RESERVED_FILES)
    log.warning("GRU_MAX_CONNECTIONS=%d needs %d open files per worker but the hard limit (ulimit -Hn) is "
                "%d: each worker takes at most %d connections. Raise the limit (docker run --ulimit "
                "nofile=65536, compose `ulimits`) or lower GRU_MAX_CONNECTIONS", max_connections, needed,
                hard, fitted)
    return fitted
