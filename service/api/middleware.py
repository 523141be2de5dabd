"""The outermost layer of every request: a request id (the caller's X-Request-ID or a new one) in the log
context and the response header, auth, the in-flight gauge, one access log line and the request metrics.

What a request leaves behind (its access log line, its metrics) goes into `RequestLog` as one tuple and
is written out with the others every FLUSH_INTERVAL_S: one write for all the lines, one metrics update
per label set. Writing them one request at a time cost ~45 us of each request (a LogRecord, a JSON line
and a write system call; six labelled metric updates), most of the per-request cost of a small model."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import Counter, defaultdict

from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
from service.api.errors import error_response
from service.auth import HEALTH_PATHS, Authenticator
from service.errors import CLIENT_GONE
from service.inference import api_of, find

log = logging.getLogger("gru_serve.access")
QUIET_PATHS = HEALTH_PATHS | {"/metrics"}  # probes and scrapes: logged at debug, not counted
CHECKED_METHODS = frozenset({"GET", "HEAD", "POST"})
FLUSH_INTERVAL_S = 0.5  # how late an access log line or a request's metrics may be written
LINES_PER_WRITE = 256  # access log lines formatted and written at once

Answered = tuple[float, logs.RequestContext, int, float]  # (unix time, context, status, seconds taken)


class RequestLog:
    """The requests answered since the last flush and the requests in flight. `flush` writes them: on a
    timer while there is something to write, whenever the metrics are read (/metrics, v2 statistics: so
    that they hold this worker's requests) and at shutdown."""

    def __init__(self, access_log: bool = True):
        self.access_log = access_log
        self.in_flight = 0
        self._answered: list[Answered] = []
        self._timer: asyncio.TimerHandle | None = None
        metrics.flush_before_reading(self)

    def answered(self, context: logs.RequestContext, status: int, duration: float) -> None:
        self._answered.append((time.time(), context, status, duration))
        if self._timer is None:
            self._flush_soon()

    def _flush_soon(self) -> None:  # the flush runs in an empty context, not the request's
        self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._flush_due,
                                                            context=contextvars.Context())

    def _flush_due(self) -> None:
        self._timer = None
        self.flush()
        if self.in_flight:  # keep the in-flight gauge current while requests run
            self._flush_soon()

    def flush(self) -> None:
        answered, self._answered = self._answered, []
        metrics.IN_FLIGHT.set(self.in_flight)
        metrics.flush_deferred()  # the batches' figures (the scheduler's and the runtime's)
        self._count(answered)
        if answered:
            contextvars.Context().run(self._write_lines, answered)  # no request's context in the lines

    @staticmethod
    def _count(answered: list[Answered]) -> None:
        counts: Counter[tuple[str, str, str, str]] = Counter()
        durations: defaultdict[tuple[str, str, str], list[float]] = defaultdict(list)
        inferences: defaultdict[tuple[str, str, str], list[float]] = defaultdict(list)
        last_success: dict[tuple[str, str], float] = {}
        for at, context, status, duration in answered:
            path = context.path
            if path in QUIET_PATHS:
                continue
            model = context.model or ""
            version = str(context.version) if context.version is not None else ""
            found = find(path)  # an inference operation (REST or gRPC), or another route
            api = found[0].api if found is not None else api_of(path)
            counts[(model, version, api, str(status))] += 1
            if model:
                durations[(model, version, api)].append(duration)
                if found is not None:  # for the v2 statistics (service/v2_model.py)
                    inferences[(model, version, "success" if status == 200 else "fail")].append(duration)
                    if status == 200:
                        last_success[(model, version)] = at
        for labels, count in counts.items():
            metrics.REQUESTS.labels(*labels).inc(count)
        for key, values in durations.items():
            metrics.observe_many(metrics.REQUEST_SECONDS.labels(*key), values)
        for labels3, values in inferences.items():
            metrics.observe_many(metrics.INFERENCE_REQUESTS.labels(*labels3), values)
        for labels2, at in last_success.items():
            metrics.LAST_INFERENCE.labels(*labels2).set(at)

    def _write_lines(self, answered: list[Answered]) -> None:
        for start in range(0, len(answered), LINES_PER_WRITE):  # few records alive at once, for the gc
            records = []
            for at, context, status, duration in answered[start:start + LINES_PER_WRITE]:
                level = logging.DEBUG if context.path in QUIET_PATHS or not self.access_log else logging.INFO
                if log.isEnabledFor(level):
                    records.append(AccessRecord(level, at, context, status, duration))
            logs.handle_many(log, records)


class AccessRecord(logging.LogRecord):
    """An access log line: LogRecord's attributes copied from one record built the usual way, then the
    request's (building each the usual way cost 5 us)."""

    def __init__(self, level: int, at: float, context: logs.RequestContext, status: int, duration: float):
        fields = vars(self)
        fields.update(_TEMPLATE)
        fields.update(request_id=context.request_id, method=context.method, path=context.path,
                      levelno=level, levelname=_LEVEL_NAMES[level], created=at, msecs=(at - int(at)) * 1000,
                      args=(context.method, context.path, status), status=status,
                      duration_ms=round(duration * 1000, 3))
        if context.model is not None:
            fields.update(model=context.model, version=context.version)
        if context.trace_id is not None:
            fields["trace_id"] = context.trace_id
        if context.error is not None:
            fields["error"] = context.error


_TEMPLATE = vars(log.makeRecord(log.name, logging.INFO, __file__, 0, "%s %s %s", (), None))
_LEVEL_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO"}


class RequestMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, requests: RequestLog,
                 router: Router | None = None):
        self.app, self.auth, self.requests, self.router = app, authenticator, requests, router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        given_id = authorization = b""
        for name, value in scope["headers"]:  # the last of a repeated header counts, as in a dict
            if name == b"x-request-id":
                given_id = value
            elif name == b"authorization":
                authorization = value
        request_id = logs.request_id_from(given_id.decode("latin-1"))
        context = logs.RequestContext(request_id, method=scope["method"], path=path)
        token = logs.current.set(context)
        started, status, gone = time.perf_counter(), 0, False  # status 0: no answer started
        counted = path not in QUIET_PATHS

        async def receive_noting_disconnect() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", context.request_id.encode())]
            await send(message)

        if counted:
            self.requests.in_flight += 1
        try:
            denial = self.auth.check(path, authorization.decode("latin-1") or None)
            if denial is not None and scope["method"] in self.routed_methods():
                extra = {"www-authenticate": 'Bearer realm="gru-serve"'} if denial.status == 401 else None
                code = "unauthorized" if denial.status == 401 else "forbidden"
                response = error_response(api_of(path), code, denial.message, "authorization", extra)
                await response(scope, receive_noting_disconnect, send_with_id)
            else:
                await self.app(scope, receive_noting_disconnect, send_with_id)
        finally:
            if counted:
                self.requests.in_flight -= 1
            if not status:  # the client went away before its answer, or the app failed without one
                status = CLIENT_GONE if gone else 500
            if counted or log.isEnabledFor(logging.DEBUG):
                self.requests.answered(context, status, time.perf_counter() - started)
            logs.current.reset(token)

    def routed_methods(self) -> frozenset[str]:
        """The methods a handler may take: GET, HEAD and POST always (the inference operations may be
        answered outside the router), and those of the router's routes. A request with another method
        reaches no handler (405 or 404), so it needs no token, and gets 405 whatever its token."""
        routes = self.router.routes if self.router is not None else []
        return CHECKED_METHODS | {m for route in routes for m in getattr(route, "methods", None) or ()}
