"""Open Inference Protocol (KServe v2) over REST, beside the native API: server and model metadata,
health, readiness per model and version, and inference with JSON or binary tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.api.deps import RepositoryDep, SettingsDep, resolve_model
from service.api.errors import ApiError, Unavailable
from service.api.responses import NumpyJSONResponse
from service.api.routes.stream import held_chunk
from service.api.v2_codec import HEADER_LENGTH, decode_request, encode_response, model_inputs, model_tensors
from service.bundle import OUTPUT, STATE_OUTPUT
from service.repository import Repository
from service.runtime import ModelRuntime

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
SERVER_NAME, SERVER_VERSION = "gru-serve", "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")


class StreamingUnavailable(ApiError):
    status, code = 400, "streaming_unavailable"


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "no model loaded yet"}})
async def ready(repository: RepositoryDep) -> NumpyJSONResponse:
    return NumpyJSONResponse({"ready": repository.ready}, status_code=200 if repository.ready else 503)


@router.get("/models/{name}")
async def model_metadata(name: str, repository: RepositoryDep) -> dict[str, Any]:
    return _metadata(repository, resolve_model(repository, name), repository.versions(name))


@router.get("/models/{name}/versions/{version}")
async def model_version_metadata(name: str, version: int, repository: RepositoryDep) -> dict[str, Any]:
    return _metadata(repository, resolve_model(repository, name, version), [version])


@router.get("/models/{name}/ready")
async def model_ready(name: str, repository: RepositoryDep) -> dict[str, Any]:
    runtime = resolve_model(repository, name)
    return {"name": name, "version": str(runtime.manifest.version), "ready": True}


@router.get("/models/{name}/versions/{version}/ready")
async def model_version_ready(name: str, version: int, repository: RepositoryDep) -> dict[str, Any]:
    resolve_model(repository, name, version)
    return {"name": name, "version": str(version), "ready": True}


@router.post("/models/{name}/infer")
async def infer(name: str, request: Request, repository: RepositoryDep, settings: SettingsDep) -> Response:
    return await _infer(request, resolve_model(repository, name), settings.max_sequences_per_request)


@router.post("/models/{name}/versions/{version}/infer")
async def infer_version(name: str, version: int, request: Request, repository: RepositoryDep,
                        settings: SettingsDep) -> Response:
    return await _infer(request, resolve_model(repository, name, version), settings.max_sequences_per_request)


def _metadata(repository: Repository, runtime: ModelRuntime, versions: list[int]) -> dict[str, Any]:
    inputs, outputs = model_tensors(runtime.manifest)
    return {"name": runtime.manifest.name, "versions": [str(v) for v in versions],
            "platform": "onnxruntime_onnx", "inputs": inputs, "outputs": outputs}


async def _infer(request: Request, runtime: ModelRuntime, max_sequences: int) -> Response:
    if not request.app.state.repository.ready:
        raise Unavailable("the server is not ready", None)
    body = await request.body()
    decoded = decode_request(body, request.headers.get(HEADER_LENGTH))
    x, state = model_inputs(decoded, runtime.manifest, max_sequences)
    metrics.SEQUENCES_PER_REQUEST.labels(runtime.manifest.name).observe(x.shape[0])
    if any(decoded.parameters.get(p) not in (None, 0, "", False) for p in SEQUENCE_PARAMETERS):
        output, next_state = await _sequence_chunk(request, runtime, decoded.parameters, x, state)
    else:
        output, next_state = await run_in_threadpool(runtime.run, x, None, state)  # all steps valid
    content, headers = encode_response(runtime.manifest, decoded, {OUTPUT: output, STATE_OUTPUT: next_state})
    return Response(content, headers=headers)


async def _sequence_chunk(request: Request, runtime: ModelRuntime, parameters: dict[str, Any],
                          x: np.ndarray, state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """sequence_id / sequence_start / sequence_end: one chunk of a server-held sequence (the semantics of
    Triton's sequence batcher), sharing the native /stream route's sessions and chunk batcher."""
    refusal = runtime.manifest.streaming_refusal
    if refusal:
        raise StreamingUnavailable(f"model {runtime.manifest.name!r} cannot stream: {refusal}",
                                   "parameters.sequence_id")
    sequence_id = parameters.get("sequence_id")
    if not isinstance(sequence_id, (int, str)) or isinstance(sequence_id, bool) or sequence_id in (0, ""):
        raise StreamingUnavailable("sequence_start/sequence_end need a non-zero sequence_id (int or string)",
                                   "parameters.sequence_id")
    if x.shape[0] != 1 or state is not None:
        raise StreamingUnavailable("a sequence chunk is one sequence (x [1, time, features]) without a "
                                   "state: the server holds the state", "x.shape")
    output, next_state, _ = await held_chunk(request.app.state.streaming, runtime, str(sequence_id),
                                             bool(parameters.get("sequence_start")),
                                             bool(parameters.get("sequence_end")), x[0])
    return output[None], next_state[None]  # batch axis back: output [1, ...], next_state [1, S]
