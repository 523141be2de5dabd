"""The one error table, transport-free: every error a client can get, its code, its HTTP status on the
native API and on the Open Inference Protocol (v2) and its gRPC status, and the domain errors that carry a
code. Each edge maps a domain error once: `describe` gives its code, message, field and Retry-After; the
REST edge (service/api/errors.py) renders that as its API's JSON body and HTTP status, the gRPC edge
(service/grpc/calls.py) as a gRPC status and trailing metadata.

The same condition has the same code on every API; only "the request is wrong" differs in status: 422 on
the native API, 400 on v2 (what Triton answers and its clients expect).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from service.batching import QueueFull
from service.runtime import InferenceError, NonFiniteOutput

log = logging.getLogger("gru_serve.api")

CLIENT_GONE = 499  # nginx's "client closed request": logged and counted, never sent (not a 5xx fault)
RETRY_AFTER_S = 1  # a full queue drains in milliseconds; one second is the header's finest unit


@dataclass(frozen=True)
class ErrorKind:
    status: int  # native API
    v2_status: int  # /v2/... routes
    grpc: str  # the gRPC status (a grpc.StatusCode name) of the same condition over gRPC (service/grpc/)
    meaning: str


ERROR_TABLE: dict[str, ErrorKind] = {  # code: (native status, v2 status, gRPC status, when)
    "malformed_request": ErrorKind(400, 400, "INVALID_ARGUMENT",
                                   "the bytes are not an HTTP/1.1 request (then closed); a header given "
                                   "twice, or HTTP/1.1 without exactly one Host; a body sent with an "
                                   "Upgrade (h2c) or CONNECT (then closed)"),
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
    "body_timeout": ErrorKind(408, 408, "DEADLINE_EXCEEDED",
                              "the body took longer than GRU_BODY_TIMEOUT_S; a gRPC stream idle for "
                              "GRU_GRPC_STREAM_IDLE_S"),
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
                                              "a Content-Encoding other than gzip or deflate, or a "
                                              "Transfer-Encoding other than chunked"),
    "output_not_finite": ErrorKind(422, 400, "INVALID_ARGUMENT",
                                   "the model computes NaN or infinity for these values"),
    "streaming_unsupported": ErrorKind(422, 400, "INVALID_ARGUMENT",
                                       "the model cannot stream: bidirectional, window scaling, a seasonal "
                                       "skip, or per-series normalisation"),
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
                                      "GRU_MAX_CONNECTIONS are open (then closed); Retry-After; more than "
                                      "GRU_GRPC_MAX_STREAMS_PER_CLIENT gRPC streams from one client"),
}



class ApiError(Exception):
    """A request the service refuses; `code` is a key of ERROR_TABLE, `field` names what is wrong."""

    code: ClassVar[str] = "invalid_input"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class InvalidInput(ApiError):
    code = "invalid_input"


class MalformedRequest(ApiError):
    code = "malformed_request"


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

    def __init__(self, reason: str, message: str, field: str = "sequence_id"):
        super().__init__(message, field)
        self.code = f"sequence_{reason}"  # type: ignore[misc]  # one of the three sequence_* codes


DOMAIN_ERRORS = (ApiError, InferenceError, QueueFull)
DomainError = ApiError | InferenceError | QueueFull


@dataclass(frozen=True, slots=True)
class Problem:
    """A domain error as every edge renders it."""

    code: str  # a key of ERROR_TABLE
    message: str
    field: str | None = None
    retry_after: int | None = None  # seconds (queue_full)

    @property
    def kind(self) -> ErrorKind:
        return ERROR_TABLE[self.code]


def describe(exc: DomainError, output_field: str | None = None) -> Problem:
    """The problem a domain error states; `output_field`: the request's field that a non-finite output
    is blamed on (the operation's, service/inference.py)."""
    if isinstance(exc, ApiError):
        return Problem(exc.code, exc.message, exc.field)
    if isinstance(exc, QueueFull):
        return Problem("queue_full", f"{exc}; retry after {RETRY_AFTER_S} s, or add workers (GRU_WORKERS)",
                       retry_after=RETRY_AFTER_S)
    if isinstance(exc, NonFiniteOutput):
        return Problem("output_not_finite", str(exc), output_field)
    log.error("inference failed: %s", exc)
    return Problem("inference_failed", str(exc))
