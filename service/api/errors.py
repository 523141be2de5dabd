"""Domain errors, and their mapping to JSON HTTP answers at the edge: {"error": {code, message, field}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from service.api.responses import NumpyJSONResponse as JSONError
from service.runtime import InferenceError

log = logging.getLogger("gru_serve.api")


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


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


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONError:
        return JSONError(error_body(exc.code, exc.message, exc.field), status_code=exc.status)

    @app.exception_handler(InferenceError)
    async def inference_error(_: Request, exc: InferenceError) -> JSONError:
        log.error("inference failed: %s", exc)
        return JSONError(error_body("inference_failed", str(exc)), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONError:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"][1:]) or None
        return JSONError(error_body("invalid_input", first["msg"], field), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONError:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONError(error_body(code, str(exc.detail)), status_code=exc.status_code,
                              headers=getattr(exc, "headers", None))
