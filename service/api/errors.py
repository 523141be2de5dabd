"""The REST edge of the one error table (service/errors.py): every error body is built here, in the form of
the API the request belongs to, with that API's HTTP status.

native:  {"error": {"code", "message", "field", "request_id"}}
v2:      {"error": "<message>", "code", "field", "request_id"}   (the protocol's form, with extras beside)

An inference operation names its API in the operation table (service/inference.py); any other route
belongs to v2 when its path is under /v2 (`api_of`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from service.api.responses import NumpyJSONResponse as JSONError
from service.errors import DOMAIN_ERRORS, ERROR_TABLE, DomainError, Problem, describe
from service.inference import api_of
from service.logs import current_request_id, note_error


def status_of(code: str, api: str) -> int:
    kind = ERROR_TABLE[code]
    return kind.v2_status if api == "v2" else kind.status


def error_body(api: str, code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON error body in `api`'s form ("native" or "v2"). Every error body is built here."""
    note_error(code)  # the access log line names it
    if api == "v2":
        return {"error": message, "code": code, "field": field, "request_id": current_request_id()}
    return {"error": {"code": code, "message": message, "field": field, "request_id": current_request_id()}}


def error_response(api: str, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> JSONError:
    body = error_body(api, code, message, field) | (extra or {})
    return JSONError(body, status_code=status_of(code, api), headers=headers)


def problem_response(problem: Problem, api: str) -> JSONError:
    headers = {"Retry-After": str(problem.retry_after)} if problem.retry_after is not None else None
    return error_response(api, problem.code, problem.message, problem.field, headers)


def domain_error_response(exc: DomainError, api: str, output_field: str | None = None) -> JSONError:
    return problem_response(describe(exc, output_field), api)


def raw_error_response(code: str, message: str, path: str = "",
                       headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error answer as bytes, for the transport, which answers before any ASGI app runs
    (the connection is closed after it)."""
    api = api_of(path)
    status = status_of(code, api)
    body = orjson.dumps(error_body(api, code, message, None))
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _domain_error(request: Request, exc: Exception) -> JSONError:
    assert isinstance(exc, DOMAIN_ERRORS)
    return domain_error_response(exc, api_of(request.url.path))


# Triton's HTTP extensions gru-serve does not serve, by path: their 404 says so (tritonclient's
# get_system_shared_memory_status, get_trace_settings, update_log_settings... got a bare "Not Found").
UNSERVED_EXTENSIONS = {"/v2/systemsharedmemory": "Triton's system shared-memory extension",
                       "/v2/cudasharedmemory": "Triton's CUDA shared-memory extension",
                       "/v2/trace/setting": "Triton's trace extension",
                       "/v2/logging": "Triton's logging extension"}


def unserved_extension(path: str) -> str | None:
    if path.startswith("/v2/models/") and path.endswith("/trace/setting"):  # a model's trace settings
        return UNSERVED_EXTENSIONS["/v2/trace/setting"]
    return next((name for prefix, name in UNSERVED_EXTENSIONS.items()
                 if path == prefix or path.startswith(prefix + "/")), None)


def install_error_handlers(app: FastAPI) -> None:
    for error in DOMAIN_ERRORS:
        app.add_exception_handler(error, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONError:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"][1:]) or None
        return error_response(api_of(request.url.path), "invalid_input", f"{field}: {first['msg']}", field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONError:
        api, headers = api_of(request.url.path), getattr(exc, "headers", None)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        if code is None:  # nothing in the service raises others; keep their status if a library does
            body = error_body(api, "http_error", str(exc.detail))
            return JSONError(body, status_code=exc.status_code, headers=headers)
        detail, path = str(exc.detail), request.url.path
        if exc.status_code == 404 and len(path) > 1 and path.endswith("/"):
            detail = f"{detail}: {path} (paths take no trailing slash: {path.rstrip('/')})"
        elif exc.status_code == 404 and (extension := unserved_extension(path)):
            detail = f"{detail}: {path} is {extension}, which gru-serve does not serve"
        return error_response(api, code, detail, headers=headers)
