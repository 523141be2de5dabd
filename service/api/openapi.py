"""The OpenAPI description served at /openapi.json: FastAPI's, made exact and complete.

- Security: a bearer scheme, and on each operation the requirement the same Authenticator enforces.
- Every status the server can send on an operation, with its API's error body (service/api/errors.py),
  from the transport's (408, 431, 503) to the model's (404, 410, 503 queue_full with Retry-After).
- The inference operations (predict, stream, infer) once per loaded model and version, each with the
  request schema that model accepts exactly (service/api/schemas.py); rebuilt when the models change.
  The templated paths (`/models/{name}/predict`) are replaced, whoever documented them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from service.api.auth import Access, Authenticator
from service.api.errors import ERROR_TABLE, is_v2
from service.api.parsing import BINARY, LENGTHS_PATTERN, shape_pattern
from service.api.schemas import (
    ErrorResponse,
    V2ErrorResponse,
    infer_request_schema,
    infer_response_schema,
    predict_request_schema,
    stream_request_schema,
)
from service.repository import Repository
from service.runtime import ModelRuntime
from service.settings import Settings

INFERENCE = re.compile(r"(/v2)?/models/\{name\}(/versions/\{version\})?/(predict|stream|infer)")
# Any request can get these: from the transport, or from the head checks of service/api/limits.py.
TRANSPORT = ("header_timeout", "headers_too_large", "too_many_connections", "body_too_large",
             "unsupported_content_encoding")
BODY = ("malformed_body", "invalid_input", "body_timeout")  # operations that read a body
PER_VERB = {
    "predict": ("unsupported_media_type", "output_not_finite", "queue_full", "inference_failed"),
    "stream": ("unsupported_media_type", "streaming_unsupported", "invalid_state", "sequence_not_found",
               "sequence_ended", "sequence_expired", "sequence_evicted", "output_not_finite", "queue_full",
               "inference_failed"),
    "infer": ("streaming_unsupported", "output_not_finite", "sequence_not_found", "sequence_ended",
              "sequence_expired", "sequence_evicted", "queue_full", "inference_failed"),
    "load": ("load_failed",), "index": ("unavailable",),
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                               "schema": {"type": "integer"}}}
BEARER = {"type": "http", "scheme": "bearer", "description": "GRU_API_TOKENS for inference and metadata, "
          "GRU_ADMIN_TOKENS for /v2/repository/* (when configured; README \"Operations\")"}


def install_openapi(app: FastAPI, authenticator: Authenticator) -> None:
    """Serve the completed description; FastAPI's (or whoever wrapped it) is the base."""
    base: Callable[[], dict[str, Any]] = app.openapi
    built: dict[tuple, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        repository: Repository = app.state.repository
        key = tuple((name, tuple(repository.versions(name))) for name in sorted(repository.models))
        if key not in built:
            built.clear()
            built[key] = complete(copy.deepcopy(base()), repository, app.state.settings, authenticator)
        return built[key]

    app.openapi = openapi  # type: ignore[method-assign]


def complete(doc: dict[str, Any], repository: Repository, settings: Settings,
             auth: Authenticator) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    components["securitySchemes"] = {"bearer": BEARER}
    error_refs = {"": _component(ErrorResponse, schemas), "v2": _component(V2ErrorResponse, schemas)}
    paths: dict[str, Any] = {}
    for path, item in doc["paths"].items():
        match = INFERENCE.fullmatch(path)
        if match is None:
            paths[path] = item
            continue
        for concrete, runtime in _loaded(repository, match[3], bool(match[2])):
            operation = copy.deepcopy(item["post"])
            paths[concrete] = {"post": _per_model(operation, concrete, runtime, match[3], settings)}
    for path, item in paths.items():
        for method, operation in item.items():
            secured = _secured(auth, path)
            operation["responses"] = _responses(path, method, operation, error_refs[_api(path)], secured)
            if secured:
                operation["security"] = [{"bearer": []}]
    doc["paths"] = paths
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _api(path: str) -> str:
    return "v2" if is_v2(path) else ""


def _loaded(repository: Repository, verb: str, versioned: bool) -> list[tuple[str, ModelRuntime]]:
    """The concrete paths of an inference operation: per model (newest version) or per loaded version."""
    prefix = "/v2" if verb == "infer" else ""
    found = []
    for name in sorted(repository.models):
        for version in repository.versions(name) if versioned else [None]:
            runtime = repository.get(name, version)
            if runtime is None or (verb == "stream" and runtime.manifest.streaming_refusal is not None):
                continue  # a model that cannot stream has no stream operation to call
            where = f"/versions/{version}" if versioned else ""
            found.append((f"{prefix}/models/{name}{where}/{verb}", runtime))
    return found


def _per_model(operation: dict[str, Any], path: str, runtime: ModelRuntime, verb: str,
               settings: Settings) -> dict[str, Any]:
    manifest = runtime.manifest
    operation["operationId"] = re.sub(r"\W", "_", f"{verb}{path}")
    operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("in") != "path"]
    operation["summary"] = f"{operation.get('summary', verb)}: {manifest.name} version {manifest.version}"
    if verb == "predict":
        schema = predict_request_schema(manifest.inputs, settings.max_sequences_per_request)
    elif verb == "stream":
        schema = stream_request_schema(manifest.inputs)
    else:
        schema = infer_request_schema(manifest, settings.max_sequences_per_request)
        binary = {"type": "string", "format": "binary"}
        operation["responses"] = {"200": {
            "description": "the outputs: JSON, or JSON then binary tensors (Inference-Header-Content-Length) "
                           "when binary outputs are asked for",
            "content": {"application/json": {"schema": infer_response_schema()},
                        "application/octet-stream": {"schema": binary}}}}
    content = {"application/json": {"schema": schema}}
    if verb == "predict":  # float32 steps too (X-Shape, X-Lengths: service/api/inference.py)
        content.update((k, v) for k, v in operation["requestBody"]["content"].items() if k == BINARY)
        features = len(manifest.inputs.features)
        operation["parameters"] = [_shape_pattern(p, features) for p in operation["parameters"]]
    operation["requestBody"] = {"required": True, "content": content}
    return operation


def _shape_pattern(parameter: dict[str, Any], features: int) -> dict[str, Any]:
    """X-Shape with this model's feature count (batch,time,features), X-Lengths: the parser's grammar."""
    patterns = {"X-Shape": shape_pattern(features), "X-Lengths": LENGTHS_PATTERN}
    pattern = patterns.get(parameter.get("name", ""))
    if pattern is None:
        return parameter
    return {**parameter, "schema": {**parameter["schema"], "pattern": pattern}}


def _responses(path: str, method: str, operation: dict[str, Any], error: dict[str, str],
               secured: bool) -> dict[str, Any]:
    codes = list(TRANSPORT)
    if "requestBody" in operation:
        codes += BODY
    elif any(p.get("schema", {}).get("type") == "integer" for p in operation.get("parameters", [])):
        codes.append("invalid_input")  # a path parameter that is not an integer
    if "/models/" in path:
        codes.append("model_not_found")
    verb = path.rstrip("/").rsplit("/", 1)[-1]
    codes += PER_VERB.get(verb, ())
    if secured:
        codes += ["unauthorized", "forbidden"] if path.startswith("/v2/repository") else ["unauthorized"]
    responses = {k: v for k, v in operation.get("responses", {}).items() if k < "400" or not _error(v)}
    by_status: dict[str, list[str]] = {}
    for code in dict.fromkeys(codes):
        kind = ERROR_TABLE[code]
        by_status.setdefault(str(kind.v2_status if is_v2(path) else kind.status), []).append(code)
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
