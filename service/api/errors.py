"""The one error table: every error a client can get, its code and its HTTP status on the native API and
on the Open Inference Protocol routes (/v2/...) and its gRPC status, and the one function that builds
their JSON bodies.

Native:  {"error": {"code", "message", "field", "request_id"}}
v2:      {"error": "<message>", "code", "field", "request_id"}   (the protocol's form, with extras beside)

The same condition has the same code on both APIs; only "the request is wrong" differs in status: 422 on
the native API, 400 on v2 (what Triton answers and its clients expect). README "Errors" is this table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from service.api.responses import NumpyJSONResponse as JSONError
from service.batching import QueueFull
from service.logs import current_request_id
from service.runtime import InferenceError, NonFiniteOutput

log = logging.getLogger("gru_serve.api")
RETRY_AFTER_S = 1  # a full queue drains in milliseconds; one second is the header's finest unit


@dataclass(frozen=True)
class ErrorKind:
    status: int  # native API
    v2_status: int  # /v2/... routes
    grpc: str  # the gRPC status (a grpc.StatusCode name) of the same condition over gRPC (service/grpc/)
    meaning: str


ERROR_TABLE: dict[str, ErrorKind] = {  # code: (native status, v2 status, gRPC status, when)
    "malformed_request": ErrorKind(400, 400, "INVALID_ARGUMENT",
                                   "the bytes are not an HTTP/1.1 request (then closed)"),
    "malformed_body": ErrorKind(400, 400, "INVALID_ARGUMENT",
                                "the body is not JSON (or not the binary layout it claims)"),
    "invalid_input": ErrorKind(422, 400, "INVALID_ARGUMENT",
                               "well-formed, but not a valid request; `field` says where"),
    "unauthorized": ErrorKind(401, 401, "UNAUTHENTICATED",
                              "no bearer token, or an unknown one (with WWW-Authenticate)"),
    "forbidden": ErrorKind(403, 403, "PERMISSION_DENIED",
                           "a valid token without the admin rights the endpoint needs"),
    "model_not_found": ErrorKind(404, 404, "NOT_FOUND", "no loaded model (or version) of that name"),
    "not_found": ErrorKind(404, 404, "UNIMPLEMENTED", "no such endpoint"),
    "sequence_not_found": ErrorKind(404, 404, "NOT_FOUND",
                                    "a server-held sequence id that was never started"),
    "method_not_allowed": ErrorKind(405, 405, "UNIMPLEMENTED", "the endpoint exists, not with this method"),
    "header_timeout": ErrorKind(408, 408, "DEADLINE_EXCEEDED",
                                "the headers took longer than GRU_HEADER_TIMEOUT_S (then closed)"),
    "body_timeout": ErrorKind(408, 408, "DEADLINE_EXCEEDED", "the body took longer than GRU_BODY_TIMEOUT_S"),
    "sequence_ended": ErrorKind(410, 410, "NOT_FOUND", "the sequence was ended by its last chunk"),
    "sequence_expired": ErrorKind(410, 410, "NOT_FOUND",
                                  "the sequence had no chunk for GRU_SESSION_IDLE_SECONDS"),
    "sequence_evicted": ErrorKind(410, 410, "NOT_FOUND",
                                  "evicted: more than GRU_MAX_SESSIONS sequences were open"),
    "body_too_large": ErrorKind(413, 413, "RESOURCE_EXHAUSTED",
                                "the body (decoded, if compressed) is over GRU_MAX_BODY_BYTES"),
    "unsupported_media_type": ErrorKind(415, 415, "INVALID_ARGUMENT",
                                        "a Content-Type the endpoint does not take"),
    "unsupported_content_encoding": ErrorKind(415, 415, "UNIMPLEMENTED",
                                              "a Content-Encoding other than gzip or deflate"),
    "output_not_finite": ErrorKind(422, 400, "INVALID_ARGUMENT",
                                   "the model computes NaN or infinity for these values"),
    "streaming_unsupported": ErrorKind(422, 400, "INVALID_ARGUMENT",
                                       "the model cannot stream (e.g. bidirectional)"),
    "invalid_state": ErrorKind(422, 400, "INVALID_ARGUMENT",
                               "a streaming state token that is forged, foreign or stale"),
    "headers_too_large": ErrorKind(431, 431, "RESOURCE_EXHAUSTED",
                                   "over GRU_MAX_HEADER_BYTES or GRU_MAX_HEADER_COUNT"),
    "inference_failed": ErrorKind(500, 500, "INTERNAL",
                                  "onnxruntime failed on this request (logged with its id)"),
    "internal": ErrorKind(500, 500, "INTERNAL", "a fault in the server (logged with the request's id)"),
    "http_error": ErrorKind(500, 500, "UNKNOWN",
                            "an HTTP error raised by a library, with its own status (none known)"),
    "load_failed": ErrorKind(400, 400, "INVALID_ARGUMENT",
                             "admin load: a version failed to load; serving ones unchanged"),
    "queue_full": ErrorKind(503, 503, "UNAVAILABLE",
                            "the model's queue is full (GRU_MAX_QUEUE_SIZE or GRU_MAX_QUEUE_WAIT_MS); "
                            "see Retry-After"),
    "unavailable": ErrorKind(503, 503, "UNAVAILABLE",
                             "not ready yet, or the repository folder is unreadable"),
    "too_many_connections": ErrorKind(503, 503, "RESOURCE_EXHAUSTED",
                                      "GRU_MAX_CONNECTIONS are open (then closed); Retry-After"),
}


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def status_of(code: str, path: str) -> int:
    kind = ERROR_TABLE[code]
    return kind.v2_status if is_v2(path) else kind.status


def error_body(path: str, code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON error body, in the form of the API that `path` belongs to. Every error body is built here."""
    if is_v2(path):
        return {"error": message, "code": code, "field": field, "request_id": current_request_id()}
    return {"error": {"code": code, "message": message, "field": field, "request_id": current_request_id()}}


def error_response(path: str, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> JSONError:
    body = error_body(path, code, message, field) | (extra or {})
    return JSONError(body, status_code=status_of(code, path), headers=headers)


def raw_error_response(code: str, message: str, path: str = "",
                       headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error answer as bytes, for the transport, which answers before any ASGI app runs
    (the connection is closed after it)."""
    status = status_of(code, path)
    body = orjson.dumps(error_body(path, code, message, None))
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body



class ApiError(Exception):
    """A request the service refuses; `code` is a key of ERROR_TABLE, `field` names what is wrong."""

    code: ClassVar[str] = "invalid_input"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class InvalidInput(ApiError):
    code = "invalid_input"


class MalformedBody(ApiError):
    code = "malformed_body"


class UnsupportedMediaType(ApiError):
    code = "unsupported_media_type"


class UnsupportedEncoding(ApiError):
    code = "unsupported_content_encoding"


class BodyTooLarge(ApiError):
    code = "body_too_large"


class BodyTimeout(ApiError):
    code = "body_timeout"


class HeadersTooLarge(ApiError):
    code = "headers_too_large"


class ModelNotFound(ApiError):
    code = "model_not_found"


class Unavailable(ApiError):
    code = "unavailable"


class StreamingUnsupported(ApiError):
    code = "streaming_unsupported"


class InvalidState(ApiError):
    code = "invalid_state"


class SequenceNotOpen(ApiError):
    code = "sequence_not_found"


class SequenceGoneError(ApiError):
    """The sequence ended, expired (idle) or was evicted: the code says which."""

    def __init__(self, reason: str, message: str):
        super().__init__(message, "sequence_id")
        self.code = f"sequence_{reason}"  # type: ignore[misc]  # one of the three sequence_* codes


DOMAIN_ERRORS = (ApiError, InferenceError, QueueFull)


def domain_error_response(exc: ApiError | InferenceError | QueueFull, path: str) -> JSONError:
    """The JSON answer for a domain error; used by the handlers below and by the predict fast path."""
    if isinstance(exc, ApiError):
        return error_response(path, exc.code, exc.message, exc.field)
    if isinstance(exc, QueueFull):
        message = f"{exc}; retry after {RETRY_AFTER_S} s, or add workers (GRU_WORKERS)"
        return error_response(path, "queue_full", message, headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, NonFiniteOutput):
        field = {"predict": "sequences", "stream": "steps", "infer": "inputs"}.get(path.rsplit("/", 1)[-1])
        return error_response(path, "output_not_finite", str(exc), field)
    log.error("inference failed: %s", exc)
    return error_response(path, "inference_failed", str(exc))


async def _domain_error(request: Request, exc: Exception) -> JSONError:
    assert isinstance(exc, DOMAIN_ERRORS)
    return domain_error_response(exc, request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    for error in DOMAIN_ERRORS:
        app.add_exception_handler(error, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONError:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"][1:]) or None
        return error_response(request.url.path, "invalid_input", f"{field}: {first['msg']}", field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONError:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        if code is None:  # nothing in the service raises others; keep their status if a library does
            body = error_body(request.url.path, "http_error", str(exc.detail))
            return JSONError(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
        return error_response(request.url.path, code, str(exc.detail), headers=getattr(exc, "headers", None))
