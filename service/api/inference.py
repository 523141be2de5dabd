"""Every operation that runs a model, answered in plain ASGI ahead of FastAPI:

    POST /models/{name}[/versions/{v}]/predict      native predict   (service/api/routes/predict.py)
    POST /models/{name}[/versions/{v}]/stream       native stream    (service/api/routes/stream.py)
    POST /v2/models/{name}[/versions/{v}]/infer     Open Inference Protocol (service/api/routes/v2.py)

The path names the operation and the model version; the version's scheduler (service/batching.py) is
asked for room first. `LoadShedder`, the outermost layer (service/api/app.py), refuses a full queue
(503 `queue_full`, Retry-After) from the headers alone, for a small share of what an answer costs.
`InferenceFront`, inside the request ids, auth, metrics, access log and body limit, reads the body and
calls the API's handler: decode -> the scheduler -> render, in the API's own format. FastAPI's router
never sees these requests (its routing and dependency injection cost more than this whole path,
measured); `document` adds them to its OpenAPI description from the same table and pydantic schemas.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service import logs, metrics
from service.api.auth import Authenticator
from service.api.deps import resolve_model
from service.api.errors import (
    DOMAIN_ERRORS,
    ModelNotFound,
    UnsupportedMediaType,
    domain_error_response,
    error_response,
)
from service.api.parsing import BINARY
from service.api.routes import predict, stream, v2
from service.api.schemas import (
    ErrorResponse,
    PredictRequest,
    PredictResponse,
    StreamRequest,
    StreamResponse,
)
from service.batching import QueueFull, Scheduler, SchedulerPool, SchedulerStopped
from service.runtime import ModelRuntime
from service.settings import Settings
from service.streaming.hub import StreamingHub

log = logging.getLogger("gru_serve.access")
SUMMARY_INTERVAL_S = 1.0  # refusals are logged as one line per model and interval, not one per request
PATH = re.compile(r"/(?:(v2)/)?models/([^/]+)(?:/versions/([0-9]{1,9}))?/(predict|stream|infer)")
JSON = b"application/json"


@dataclass(slots=True)
class Call:
    """One inference request, as the front hands it to an API's handler."""

    runtime: ModelRuntime
    scheduler: Scheduler
    settings: Settings
    streaming: StreamingHub
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> str | None:
        return next((v.decode("latin-1") for k, v in self.headers if k == name), None)

    def json(self, content: Any) -> Reply:
        """A 200 answer holding `content` as JSON (NumPy arrays included)."""
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), [(b"content-type", JSON)]

    def media_type(self) -> str:
        return (self.header(b"content-type") or "").split(";")[0].strip().lower()

    def require_json(self, alternative: str = "") -> None:
        """UnsupportedMediaType unless the body is JSON; `alternative`: what else the API takes."""
        media_type = self.media_type()
        if media_type != "application/json":
            raise UnsupportedMediaType(f"content type {media_type or '(none)'!r} is not supported; send JSON "
                                       f"with 'Content-Type: application/json'{alternative}", "content-type")


Reply = tuple[bytes, list[tuple[bytes, bytes]]]  # a 200 answer: body, headers (content-type at least)
Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Operation:
    api: str  # "" (native) or "v2": the path's prefix
    verb: str  # the path's last segment
    handler: Handler
    tag: str
    summary: str
    request: type | None  # the body's pydantic schema, for OpenAPI
    response: type | None
    errors: dict[int | str, dict[str, Any]]
    binary: bool = False  # also takes float32 steps (application/octet-stream, service/api/parsing.py)


OPERATIONS = (
    Operation("", "predict", predict.predict, "predict", "Predict whole sequences", PredictRequest,
              PredictResponse, predict.ERRORS, binary=True),
    Operation("", "stream", stream.stream, "stream", "Stream a sequence in chunks (carried state)",
              StreamRequest, StreamResponse, stream.ERRORS),
    # The v2 body is a KServe v2 inference request (JSON, or JSON + binary tensors); no schema here yet.
    Operation("v2", "infer", v2.infer, "open inference protocol (v2)", "Infer (KServe v2 / Triton)", None,
              None, v2.ERRORS),
)
HANDLERS = {(op.api, op.verb): op.handler for op in OPERATIONS}
BINARY_HEADERS = [
    {"name": "X-Shape", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "binary body (application/octet-stream) only, and required with it: batch,time,features "
                    "of the float32 little-endian values it holds (C order), e.g. 2,24,1"},
    {"name": "X-Lengths", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "binary body only: each sequence's steps when shorter than X-Shape's time (the rest of "
                    "its row is padding, never read), e.g. 24,17"},
]
QUEUE_FULL = {503: {"description": "queue_full: the model's queue is full, refused before the body is read; "
                                   "retry after the Retry-After header's seconds"}}


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    runtime: ModelRuntime
    scheduler: Scheduler


def operation(scope: Scope) -> tuple[Handler, str, int | None] | None:
    """The handler, model name and version an HTTP request's path names; None: not an inference path."""
    return operation_at(scope["path"]) if scope["type"] == "http" else None


def operation_at(path: str) -> tuple[Handler, str, int | None] | None:
    match = PATH.fullmatch(path)
    handler = HANDLERS.get((match[1] or "", match[4])) if match else None
    if match is None or handler is None:
        return None
    return handler, match[2], int(match[3]) if match[3] else None


def resolve(state: State, handler: Handler, name: str, version: int | None) -> Route:
    """The model version (ModelNotFound when not loaded) and its scheduler."""
    runtime = resolve_model(state.repository, name, version)
    return Route(handler, runtime, state.schedulers.get(runtime))


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

    def __init__(self, app: ASGIApp, state: State, authenticator: Authenticator):
        self.app, self.state, self.auth = app, state, authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        op = operation(scope)
        if op is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            found = resolve(self.state, *op)
        except ModelNotFound:  # answered by the front, with a request id and an access log line
            return await self.app(scope, receive, send)
        try:
            found.scheduler.check_room()
        except QueueFull as exc:
            headers = dict(scope["headers"])
            if self.auth.check(scope["path"], headers.get(b"authorization", b"").decode("latin-1") or None):
                return await self.app(scope, receive, send)  # 401/403 first: refusals are for callers only
            return await self._refuse(exc, found.runtime, headers, scope, receive, send)
        scope["gru.route"] = found  # the front uses it; the queue may fill meanwhile, submit checks again
        await self.app(scope, receive, send)

    def refusal(self, method: bytes, path: str, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """For the HTTP transport (service/api/transport.py), which asks as soon as a request's headers
        are parsed: the whole 503 answer (HTTP/1.1 bytes) when this layer would refuse the request, so
        that uvicorn builds no request and starts no task for it; None: serve it (and ask again here)."""
        op = operation_at(path) if method == b"POST" else None
        if op is None:
            return None
        try:
            found = resolve(self.state, *op)
            found.scheduler.check_room()
        except ModelNotFound:
            return None
        except QueueFull as exc:
            fields = dict(headers)
            if self.auth.check(path, fields.get(b"authorization", b"").decode("latin-1") or None):
                return None
            response = self._refusal(exc, found.runtime, fields, path)
            status = response.status_code
            head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
            head += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
            return b"".join(head) + b"\r\n" + response.body
        return None

    async def _refuse(self, exc: QueueFull, runtime: ModelRuntime, headers: dict[bytes, bytes], scope: Scope,
                      receive: Receive, send: Send) -> None:
        await self._refusal(exc, runtime, headers, scope["path"])(scope, receive, send)

    def _refusal(self, exc: QueueFull, runtime: ModelRuntime, headers: dict[bytes, bytes],
                 path: str) -> Response:
        """The 503 answer, counted (metrics, the per-second summary line)."""
        request_id = logs.request_id_from(headers.get(b"x-request-id", b"").decode("latin-1"))
        context = logs.current.set(logs.RequestContext(request_id))  # for the error body's request_id
        try:
            response = domain_error_response(exc, path)
        finally:
            logs.current.reset(context)
        response.headers["x-request-id"] = request_id
        api = "v2" if path.startswith("/v2/") else "native"
        self.state.refusals.add(runtime.manifest.name, runtime.manifest.version, api)
        return response


class InferenceFront:
    """The innermost layer: answers the inference operations (after auth, request id and body limit)."""

    def __init__(self, app: ASGIApp, state: State):
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        op = operation(scope)
        if op is None:
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            response = error_response(scope["path"], "method_not_allowed", "use POST", None,
                                      {"Allow": "POST"})
            return await response(scope, receive, send)
        try:
            found: Route = scope.get("gru.route") or resolve(self.state, *op)  # the shedder's, if it ran
            logs.note_model(found.runtime.manifest.name, found.runtime.manifest.version)
            body = await read_body(receive)  # RequestLimits raises BodyTooLarge from receive
            if body is None:
                return  # the client went away
            try:
                content, headers = await self._answer(found, scope, body)
            except SchedulerStopped:  # the version was retired while the body arrived: the current one
                content, headers = await self._answer(resolve(self.state, *op), scope, body)
        except DOMAIN_ERRORS as exc:
            return await domain_error_response(exc, scope["path"])(scope, receive, send)
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _answer(self, found: Route, scope: Scope, body: bytes) -> Reply:
        return await found.handler(Call(found.runtime, found.scheduler, self.state.settings,
                                        self.state.streaming, scope["headers"], body))


async def read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def document(app: FastAPI) -> None:
    """Add the inference operations to the app's OpenAPI description (FastAPI routes none of them)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for op in OPERATIONS:
                prefix = "/v2" if op.api else ""
                for versioned in (False, True):
                    path = f"{prefix}/models/{{name}}{'/versions/{version}' if versioned else ''}/{op.verb}"
                    schema["paths"][path] = {"post": _operation(op, versioned, schemas)}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operation(op: Operation, versioned: bool, schemas: dict[str, Any]) -> dict[str, Any]:
    parameters = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if versioned:
        parameters.append({"name": "version", "in": "path", "required": True,
                           "schema": {"type": "integer", "minimum": 1}})
    ok: dict[str, Any] = {"description": "the answer"}
    if op.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(op.response, schemas)}}
    responses: dict[str, Any] = {"200": ok}
    for status, error in (op.errors | QUEUE_FULL).items():
        responses[str(status)] = {"description": error["description"],
                                  "content": {"application/json": {"schema": _ref(ErrorResponse, schemas)}}}
    operation = {"tags": [op.tag], "summary": op.summary + (" (one loaded version)" if versioned else ""),
                 "operationId": f"{op.api or 'native'}_{op.verb}{'_version' if versioned else ''}",
                 "parameters": parameters, "responses": responses}
    if op.request is not None:
        content: dict[str, Any] = {"application/json": {"schema": _ref(op.request, schemas)}}
        if op.binary:
            content[BINARY] = {"schema": {"type": "string", "format": "binary"}}
            parameters += BINARY_HEADERS
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _ref(model: Any, schemas: dict[str, Any]) -> dict[str, str]:
    """A pydantic model's schema in components/schemas (its nested models too), and a $ref to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}

