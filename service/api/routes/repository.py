"""Model repository admin API (Triton's model-repository extension paths): index, load (and reload),
unload. Needs an admin token whenever tokens are configured (service/auth.py).

With several worker processes each worker holds its own models: an admin call reaches one worker. Use the
folder watch (GRU_POLL_INTERVAL_S) to change every worker."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service.api.deps import RepositoryDep
from service.api.errors import error_response
from service.api.responses import NumpyJSONResponse
from service.bundle import BundleError, name_problem
from service.errors import InvalidInput, MalformedBody, ModelNotFound, Unavailable

ADMIN_PATH = "/v2/repository"
router = APIRouter(prefix=ADMIN_PATH, tags=["model repository (admin)"])


@router.api_route("/index", methods=["GET", "POST"])  # one route: 405 answers say Allow: GET, POST
async def index(repository: RepositoryDep, request: Request) -> list[dict[str, Any]]:
    ready_only = index_request(await request.body())
    try:
        entries = await run_in_threadpool(repository.index)
    except BundleError as exc:  # the repository folder went away
        raise Unavailable(str(exc), None) from exc
    return [e for e in entries if e["state"] == "READY"] if ready_only else entries


def index_request(body: bytes) -> bool:
    """Triton's index request, `{"ready": true}`: only the versions ready to serve (default: every one).
    It was ignored, body and all: `{"ready": true}` listed UNAVAILABLE versions, `{` answered 200."""
    if not body.strip():
        return False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f'the body is not JSON ({exc}); send {{"ready": true}}, or no body',
                            "body") from exc
    if not isinstance(document, dict):
        raise InvalidInput('the body must be a JSON object like {"ready": true}, or empty', "body")
    if unknown := sorted(set(document) - {"ready"}):
        raise InvalidInput(f"unknown field {unknown[0]!r}; an index request may hold 'ready'", unknown[0])
    ready = document.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput(f"ready must be true or false (not {ready!r})", "ready")
    return ready


@router.post("/models/{name}/load")
async def load(name: str, repository: RepositoryDep, request: Request) -> NumpyJSONResponse:
    """Load or reload a model under its version policy. A version that fails leaves the serving ones as
    they were; the answer is 400 and says why, per version."""
    if problem := name_problem(name):
        raise ModelNotFound(f"not a valid model name: {problem}", "name")
    refuse_overrides(await request.body())
    try:
        report = await run_in_threadpool(repository.load_model, name)
    except BundleError as exc:
        raise ModelNotFound(str(exc), "name") from exc
    body = {k: v for k, v in asdict(report).items() if k != "failed"}
    body["failed"] = {str(v): reason for v, reason in report.failed.items()}
    if report.failed:
        reasons = "; ".join(f"version {v}: {r}" for v, r in report.failed.items())
        message = f"{name}: {reasons}; serving versions {report.serving} unchanged"
        return error_response("v2", "load_failed", message, "name", extra=body)
    return NumpyJSONResponse(body)


@router.post("/models/{name}/unload")
async def unload(name: str, repository: RepositoryDep) -> dict[str, Any]:
    if repository.get(name) is None:
        loaded = sorted(repository.models)
        raise ModelNotFound(f"no loaded model named {name!r}; loaded models: {loaded}", "name")
    report = await run_in_threadpool(repository.unload_model, name)
    return {"name": name, "unloaded": report.unloaded}


def refuse_overrides(body: bytes) -> None:
    """Triton's load may carry a config or model files to use in place of the repository's
    (parameters.config, parameters["file:..."]). Not supported: refused, never silently ignored."""
    if not body.strip():
        return
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not JSON ({exc}); a load needs no body", None) from exc
    parameters = document.get("parameters") if isinstance(document, dict) else None
    if parameters:
        key = next(iter(parameters)) if isinstance(parameters, dict) else ""
        field = f"parameters.{key}" if key else "parameters"
        raise InvalidInput(f"{field}: a load takes no parameters: gru-serve serves the bundle files as "
                           "exported (no config override, no model files in the request); change the "
                           "files in the repository, then load", field)
