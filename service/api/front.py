"""The REST transport of the inference operations, answered in plain ASGI ahead of FastAPI: the paths of
the operation table (service/inference.py: native predict and stream, v2 infer) never reach FastAPI's
router (its routing and dependency injection cost more than this whole path, measured).

`LoadShedder`, the outermost layer (service/api/app.py), refuses a full queue (503 `queue_full`,
Retry-After) from the headers alone, for a small share of what an answer costs. `InferenceFront`, inside
the request ids, auth, metrics, access log and body limit, reads the body and performs the operation;
a domain error becomes the operation's API's error body (service/api/errors.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from http import HTTPStatus

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service import logs, metrics
from service.api.errors import domain_error_response, error_response
from service.auth import Authenticator
from service.batching import QueueFull, SchedulerPool
from service.errors import DOMAIN_ERRORS, ModelNotFound
from service.inference import Request, Services, find, perform

log = logging.getLogger("gru_serve.access")
SUMMARY_INTERVAL_S = 1.0  # refusals are logged as one line per model and interval, not one per request


class Refusals:
    """Requests refused with queue_full: counted, and logged as one line per model, API and second
    instead of an access log line each (LoadShedder's and the gRPC servicer's)."""

    def __init__(self, schedulers: SchedulerPool):
        self.schedulers = schedulers
        self._refused: Counter[tuple[str, int, str]] = Counter()
        self._summary_due = False

    def add(self, name: str, version: int, api: str) -> None:
        metrics.REQUESTS.labels(name, str(version), api, "503").inc()
        self._refused[(name, version, api)] += 1
        if not self._summary_due:
            self._summary_due = True
            asyncio.get_running_loop().call_later(SUMMARY_INTERVAL_S, self._summarise)

    def _summarise(self) -> None:
        self._summary_due = False
        for (name, version, api), count in sorted(self._refused.items()):
            config = self.schedulers.config_for(name)
            log.warning("refused %d %s request(s) for model %s version %d with 503 queue_full in the last "
                        "%g s: its queue was full (GRU_MAX_QUEUE_SIZE=%d sequences, "
                        "GRU_MAX_QUEUE_WAIT_MS=%g)",
                        count, api, name, version, SUMMARY_INTERVAL_S, config.max_queue_size,
                        config.max_queue_wait_ms)
        self._refused.clear()


class LoadShedder:
    """The outermost layer: an inference request whose model's queue is full is refused here, before
    anything else runs (no body read, no access log line: a summary line per model and second, and the
    request counter), so that refusing costs a small share of what answering costs."""

    def __init__(self, app: ASGIApp, services: Services, refusals: Refusals, authenticator: Authenticator):
        self.app, self.services, self.refusals, self.auth = app, services, refusals, authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = find(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            request = Request(found[0], self.services, found[1], found[2]).bind()
        except ModelNotFound:  # answered by the front, with a request id and an access log line
            return await self.app(scope, receive, send)
        try:
            request.scheduler.check_room()
        except QueueFull as exc:
            headers = dict(scope["headers"])
            if self.auth.check(scope["path"], headers.get(b"authorization", b"").decode("latin-1") or None):
                return await self.app(scope, receive, send)  # 401/403 first: refusals are for callers only
            return await self._refuse(exc, request, headers, scope, receive, send)
        scope["gru.request"] = request  # the front uses it; the queue may fill meanwhile: checked again
        await self.app(scope, receive, send)

    def refusal(self, method: bytes, path: str, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """For the HTTP transport (service/api/transport.py), which asks as soon as a request's headers
        are parsed: the whole 503 answer (HTTP/1.1 bytes) when this layer would refuse the request, so
        that uvicorn builds no request and starts no task for it; None: serve it (and ask again here)."""
        found = find(path) if method == b"POST" else None
        if found is None:
            return None
        try:
            request = Request(found[0], self.services, found[1], found[2]).bind()
            request.scheduler.check_room()
        except ModelNotFound:
            return None
        except QueueFull as exc:
            fields = dict(headers)
            if self.auth.check(path, fields.get(b"authorization", b"").decode("latin-1") or None):
                return None
            response = self._refusal(exc, request, fields)
            status = response.status_code
            head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
            head += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
            return b"".join(head) + b"\r\n" + response.body
        return None

    async def _refuse(self, exc: QueueFull, request: Request, headers: dict[bytes, bytes], scope: Scope,
                      receive: Receive, send: Send) -> None:
        await self._refusal(exc, request, headers)(scope, receive, send)

    def _refusal(self, exc: QueueFull, request: Request, headers: dict[bytes, bytes]) -> Response:
        """The 503 answer, counted (metrics, the per-second summary line)."""
        request_id = logs.request_id_from(headers.get(b"x-request-id", b"").decode("latin-1"))
        context = logs.current.set(logs.RequestContext(request_id))  # for the error body's request_id
        try:
            response = domain_error_response(exc, request.operation.api)
        finally:
            logs.current.reset(context)
        response.headers["x-request-id"] = request_id
        manifest = request.runtime.manifest
        self.refusals.add(manifest.name, manifest.version, request.operation.api)
        return response


class InferenceFront:
    """The innermost layer: answers the inference operations (after auth, request id and body limit)."""

    def __init__(self, app: ASGIApp, services: Services):
        self.app, self.services = app, services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request: Request | None = scope.get("gru.request")  # the shedder's: found and bound already
        if request is not None:
            op, name, version = request.operation, request.name, request.version
        else:
            found = find(scope["path"]) if scope["type"] == "http" else None
            if found is None:
                return await self.app(scope, receive, send)
            op, name, version = found
        if scope["method"] != "POST":
            response = error_response(op.api, "method_not_allowed", "use POST", None, {"Allow": "POST"})
            return await response(scope, receive, send)
        try:
            if request is None:
                request = Request(op, self.services, name, version).bind()
            logs.note_model(request.runtime.manifest.name, request.runtime.manifest.version)
            body = await read_body(receive)  # RequestLimits raises BodyTooLarge from receive
            if body is None:
                return  # the client went away
            request.payload, request.headers = body, scope["headers"]
            content, headers = await perform(request)
        except DOMAIN_ERRORS as exc:
            return await domain_error_response(exc, op.api, op.error_field)(scope, receive, send)
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


async def read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
