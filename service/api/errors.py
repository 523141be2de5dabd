"""Domain errors, and their mapping to JSON HTTP answers at the edge: {"error": {code, message, field}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from service.api.responses import NumpyJSONResponse as JSONError
from service.batching import QueueFull
from service.logs import current_request_id
from service.runtime import InferenceError

log = logging.getLogger("gru_serve.api")
RETRY_AFTER_S = 1  # a full queue drains in milliseconds; one second is the header's finest unit


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


async def _domain_error(request: Request, exc: Exception) -> JSONError:
    assert isinstance(exc, DOMAIN_ERRORS)
    return domain_error_response(exc, request.url.path)


class InvalidInput(ApiError):
    status, code = 422, "invalid_input"


class MalformedBody(ApiError):
    status, code = 400, "malformed_body"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class BodyTooLarge(ApiError):
    status, code = 413, "body_too_large"


class BodyTimeout(ApiError):
    status, code = 408, "body_timeout"


class ModelNotFound(ApiError):
    status, code = 404, "model_not_found"


class ModelNotReady(ApiError):
    status, code = 400, "model_not_ready"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field, "request_id": current_request_id()}}


def error_response(path: str, status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONError:
    """Native routes answer {"error": {code, message, field, request_id}}; the Open Inference Protocol
    routes (/v2/...) answer its {"error": "<message>"} form, with the code and request id beside it."""
    if path.startswith("/v2/") or path == "/v2":
        body = {"error": message, "code": code, "field": field, "request_id": current_request_id()}
    else:
        body = error_body(code, message, field)
    return JSONError(body, status_code=status, headers=headers)


def domain_error_response(exc: ApiError | InferenceError | QueueFull, path: str) -> JSONError:
    """The JSON answer for a domain error; used by the handlers below and by the predict fast path."""
    if isinstance(exc, ApiError):
        return error_response(path, exc.status, exc.code, exc.message, exc.field)
    if isinstance(exc, QueueFull):
        message = f"{exc}; retry after {RETRY_AFTER_S} s, or raise GRU_MAX_QUEUE_SIZE or GRU_WORKERS"
        return error_response(path, 503, "queue_full", message, headers={"Retry-After": str(RETRY_AFTER_S)})
    log.error("inference failed: %s", exc)
    return error_response(path, 500, "inference_failed", str(exc))


DOMAIN_ERRORS = (ApiError, InferenceError, QueueFull)


def install_error_handlers(app: FastAPI) -> None:
    for error in DOMAIN_ERRORS:
        app.add_exception_handler(error, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONError:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"][1:]) or None
        return error_response(request.url.path, 422, "invalid_input", first["msg"], field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONError:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(request.url.path, exc.status_code, code, str(exc.detail),
                              headers=getattr(exc, "headers", None))
