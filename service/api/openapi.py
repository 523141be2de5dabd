"""The OpenAPI description served at /openapi.json, built in one pass: FastAPI's routes, and the inference
operations of the operation table (service/inference.py), which FastAPI never routes.

- Security: a bearer scheme, and on each operation the requirement the same Authenticator enforces.
- Every status the server can send on an operation, with its API's error body (service/api/errors.py),
  from the transport's (408, 431, 503) to the model's (404, 410, 503 queue_full with Retry-After): the
  codes every request can get, plus the operation's own (the table's `errors`).
- The inference operations (predict, stream, infer) once per loaded model and version, each with the
  request schema that model accepts exactly (service/api/schemas.py); rebuilt when the models change.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from service.api.schemas import (
    ErrorResponse,
    PredictRequest,
    PredictResponse,
    StreamRequest,
    StreamResponse,
    V2ErrorResponse,
    infer_request_schema,
    infer_response_schema,
    predict_request_schema,
    stream_request_schema,
)
from service.auth import Access, Authenticator
from service.codecs.native import BINARY, LENGTHS_PATTERN, shape_pattern
from service.errors import ERROR_TABLE
from service.inference import OPERATIONS, Operation, api_of
from service.repository import Repository
from service.runtime import ModelRuntime
from service.settings import Settings

# Any request can get these: from the transport, or from the head checks of service/api/limits.py.
TRANSPORT = ("header_timeout", "headers_too_large", "too_many_connections", "body_too_large",
             "unsupported_content_encoding")
BODY = ("malformed_body", "invalid_input", "body_timeout")  # operations that read a body
# FastAPI routes' own, by last segment (the index reads an optional body: {"ready": true})
ROUTE_ERRORS = {"load": ("load_failed",), "index": ("unavailable", "malformed_body", "invalid_input")}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                               "schema": {"type": "integer"}}}
BEARER = {"type": "http", "scheme": "bearer", "description": "GRU_API_TOKENS for inference and metadata, "
          "GRU_ADMIN_TOKENS for /v2/repository/* (when configured; README \"Operations\")"}
BINARY_HEADERS = [
    {"name": "X-Shape", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "binary body (application/octet-stream) only, and required with it: batch,time,features "
                    "of the float32 little-endian values it holds (C order), e.g. 2,24,1"},
    {"name": "X-Lengths", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "binary body only: each sequence's steps when shorter than X-Shape's time (the rest of "
                    "its row is padding, never read), e.g. 24,17"},
]
V2_ANSWER = {"description": "the outputs: JSON, or JSON then binary tensors "
                            "(Inference-Header-Content-Length) when binary outputs are asked for",
             "content": {"application/json": {"schema": infer_response_schema()},
                         "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
# The JSON bodies of REST's operations, by verb: one loaded model's exact request schema (from its
# manifest and the settings' limits), and the generic request and answer models.
BodySchema = Callable[[ModelRuntime, Settings], dict[str, Any]]
BODIES: dict[str, tuple[BodySchema, type[BaseModel] | None, type[BaseModel] | None]] = {
    "predict": (lambda r, s: predict_request_schema(r.manifest.inputs, s.max_sequences_per_request),
                PredictRequest, PredictResponse),
    "stream": (lambda r, s: stream_request_schema(r.manifest.inputs), StreamRequest, StreamResponse),
    "infer": (lambda r, s: infer_request_schema(r.manifest, s.max_sequences_per_request), None, None),
}


def install_openapi(app: FastAPI, authenticator: Authenticator) -> None:
    """Serve the completed description; FastAPI's (or whoever wrapped it) is the base."""
    base: Callable[[], dict[str, Any]] = app.openapi
    built: dict[tuple, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        repository: Repository = app.state.repository
        key = tuple((name, tuple(repository.versions(name))) for name in sorted(repository.models))
        if key not in built:
            built.clear()
            with warnings.catch_warnings():  # FastAPI's id for a route of two methods: unique_ids mends it
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                doc = copy.deepcopy(base())
            built[key] = complete(unique_ids(doc), repository, app.state.settings, authenticator)
        return built[key]

    app.openapi = openapi  # type: ignore[method-assign]


def unique_ids(doc: dict[str, Any]) -> dict[str, Any]:
    """Every operation its own operationId, as OpenAPI requires (client generators key on it): FastAPI
    names both methods of one route (/v2/repository/index: GET and POST) after whichever of its methods
    a set yields first. Each such operation is named after its own method."""
    operations = [(method, op) for item in doc["paths"].values() for method, op in item.items()]
    names = Counter(op.get("operationId") for _, op in operations)
    for method, operation in operations:
        name = operation.get("operationId")
        if name is not None and names[name] > 1:
            operation["operationId"] = f"{name.rsplit('_', 1)[0]}_{method}"
    return doc


def complete(doc: dict[str, Any], repository: Repository, settings: Settings,
             auth: Authenticator) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = {"bearer": BEARER}
    error_refs = {"native": _component(ErrorResponse, schemas), "v2": _component(V2ErrorResponse, schemas)}
    own: dict[str, tuple[str, ...]] = {}  # per path: the error codes of its operation
    for op in OPERATIONS:
        if op.api == "grpc":
            continue
        for template in op.paths:
            for path, runtime in _loaded(repository, op, "{version}" in template):
                doc["paths"][path] = {"post": _inference(op, path, runtime, settings, schemas)}
                own[path] = op.errors
    for path, item in doc["paths"].items():
        api = api_of(path)
        codes = own.get(path, ROUTE_ERRORS.get(path.rstrip("/").rsplit("/", 1)[-1], ()))
        for operation in item.values():
            secured = _secured(auth, path)
            operation["responses"] = _responses(path, operation, codes, error_refs[api], api, secured)
            if secured:
                operation["security"] = [{"bearer": []}]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _loaded(repository: Repository, op: Operation, versioned: bool) -> list[tuple[str, ModelRuntime]]:
    """The concrete paths of an inference operation: per model (newest version) or per loaded version."""
    prefix = "/v2" if op.api == "v2" else ""
    found = []
    for name in sorted(repository.models):
        for version in repository.versions(name) if versioned else [None]:
            runtime = repository.get(name, version)
            if runtime is None or (op.verb == "stream" and runtime.manifest.streaming_refusal is not None):
                continue  # a model that cannot stream has no stream operation to call
            where = f"/versions/{version}" if versioned else ""
            found.append((f"{prefix}/models/{name}{where}/{op.verb}", runtime))
    return found


def _inference(op: Operation, path: str, runtime: ModelRuntime, settings: Settings,
               schemas: dict[str, Any]) -> dict[str, Any]:
    manifest = runtime.manifest
    request_schema, request_model, response_model = BODIES[op.verb]
    version = " (one loaded version)" if "/versions/" in path else ""
    ok: dict[str, Any] = V2_ANSWER if op.api == "v2" else {"description": "the answer"}
    if response_model is not None:
        ok = {**ok, "content": {"application/json": {"schema": _component(response_model, schemas)}}}
    if request_model is not None:
        _component(request_model, schemas)  # the generic model, for other docs
    content: dict[str, Any] = {"application/json": {"schema": request_schema(runtime, settings)}}
    parameters: list[dict[str, Any]] = []
    if op.binary:  # float32 steps too (X-Shape, X-Lengths: service/codecs/native.py)
        content[BINARY] = {"schema": {"type": "string", "format": "binary"}}
        parameters = [_shape_pattern(p, len(manifest.inputs.features)) for p in BINARY_HEADERS]
    return {"tags": ["open inference protocol (v2)" if op.api == "v2" else op.verb],
            "summary": f"{op.summary}{version}: {manifest.name} version {manifest.version}",
            "operationId": re.sub(r"\W", "_", f"{op.verb}{path}"), "parameters": parameters,
            "requestBody": {"required": True, "content": content}, "responses": {"200": ok}}


def _shape_pattern(parameter: dict[str, Any], features: int) -> dict[str, Any]:
    """X-Shape with this model's feature count (batch,time,features), X-Lengths: the parser's grammar."""
    patterns = {"X-Shape": shape_pattern(features), "X-Lengths": LENGTHS_PATTERN}
    pattern = patterns.get(parameter.get("name", ""))
    if pattern is None:
        return parameter
    return {**parameter, "schema": {**parameter["schema"], "pattern": pattern}}


def _responses(path: str, operation: dict[str, Any], own: tuple[str, ...], error: dict[str, str], api: str,
               secured: bool) -> dict[str, Any]:
    codes = list(TRANSPORT)
    if "requestBody" in operation:
        codes += BODY
    elif any(p.get("schema", {}).get("type") == "integer" for p in operation.get("parameters", [])):
        codes.append("invalid_input")  # a path parameter that is not an integer
    if "/models/" in path:
        codes.append("model_not_found")
    codes += own
    if secured:
        codes += ["unauthorized", "forbidden"] if path.startswith("/v2/repository") else ["unauthorized"]
    responses = {k: v for k, v in operation.get("responses", {}).items() if k < "400" or not _error(v)}
    by_status: dict[str, list[str]] = {}
    for code in dict.fromkeys(codes):
        kind = ERROR_TABLE[code]
        by_status.setdefault(str(kind.v2_status if api == "v2" else kind.status), []).append(code)
    for status, status_codes in sorted(by_status.items()):
        described = "; ".join(f"{c}: {ERROR_TABLE[c].meaning}" for c in status_codes)
        schema: dict[str, Any] = error
        if status in responses:  # the route's own answer with this status (e.g. not ready: 503)
            described = f"{responses[status].get('description', '')}; {described}"
            schema = {"anyOf": [error, {"type": "object"}]}
        entry: dict[str, Any] = {"description": described,
                                 "content": {"application/json": {"schema": schema}}}
        if status == "503":
            entry["headers"] = RETRY_AFTER
        responses[status] = entry
    return responses


def _error(response: dict[str, Any]) -> bool:
    """A response documented with an error body (FastAPI's validation error or ours): replaced here."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").rsplit("/", 1)[-1] in {"HTTPValidationError", "ErrorResponse"}


def _secured(auth: Authenticator, path: str) -> bool:
    sample = path.replace("{name}", "m").replace("{version}", "1")
    return auth.enabled and auth.access(sample) is not Access.OPEN


def _component(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}
