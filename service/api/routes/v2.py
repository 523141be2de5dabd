"""Open Inference Protocol (KServe v2) over REST, beside the native API: server and model metadata,
health, readiness per model and version, and inference with JSON or binary tensors (`infer`, routed
with the native inference operations by service/api/inference.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.datastructures import State

from service.api.deps import RepositoryDep, VersionPath, resolve_model
from service.api.errors import InvalidInput, StreamingUnsupported
from service.api.responses import NumpyJSONResponse
from service.api.routes.stream import ERRORS as STREAM_ERRORS
from service.api.routes.stream import held_chunk
from service.api.v2_codec import (
    HEADER_LENGTH,
    InferRequest,
    decode_request,
    encode_response,
    model_inputs,
    model_tensors,
)
from service.api.v2_model import model_config, statistics
from service.bundle import OUTPUT, STATE_OUTPUT
from service.repository import Repository
from service.runtime import ModelRuntime
from service.settings import Settings

if TYPE_CHECKING:
    from service.api.inference import Call, Reply

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
SERVER_NAME, SERVER_VERSION = "gru-serve", "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics", "sequence"]
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")


ERRORS = STREAM_ERRORS | {400: {"description": "malformed body or tensors, or a sequence request for a model "
                                                "that cannot stream"}}


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "no model loaded yet"}})
async def ready(repository: RepositoryDep) -> NumpyJSONResponse:
    return NumpyJSONResponse({"ready": repository.ready}, status_code=200 if repository.ready else 503)


@router.get("/models/stats")
async def all_statistics(repository: RepositoryDep) -> dict[str, Any]:
    """Triton's statistics extension: every loaded version of every model."""
    return statistics([(name, v) for name in sorted(repository.models) for v in repository.versions(name)])


@router.get("/models/{name}/stats")
async def model_statistics(name: str, repository: RepositoryDep) -> dict[str, Any]:
    resolve_model(repository, name)
    return statistics([(name, v) for v in repository.versions(name)])


@router.get("/models/{name}/versions/{version}/stats")
async def model_version_statistics(name: str, version: VersionPath,
                                   repository: RepositoryDep) -> dict[str, Any]:
    return statistics([(name, resolve_model(repository, name, version).manifest.version)])


@router.get("/models/{name}/config")
async def model_configuration(name: str, repository: RepositoryDep, request: Request) -> dict[str, Any]:
    """Triton's model configuration, derived from the manifest (service/api/v2_model.py)."""
    return config(resolve_model(repository, name), request.app.state)


@router.get("/models/{name}/versions/{version}/config")
async def model_version_configuration(name: str, version: VersionPath, repository: RepositoryDep,
                                      request: Request) -> dict[str, Any]:
    return config(resolve_model(repository, name, version), request.app.state)


@router.get("/models/{name}")
async def model_metadata(name: str, repository: RepositoryDep) -> dict[str, Any]:
    return metadata(repository, resolve_model(repository, name), repository.versions(name))


@router.get("/models/{name}/versions/{version}")
async def model_version_metadata(name: str, version: VersionPath,
                                 repository: RepositoryDep) -> dict[str, Any]:
    runtime = resolve_model(repository, name, version)
    return metadata(repository, runtime, [runtime.manifest.version])


@router.get("/models/{name}/ready")
async def model_ready(name: str, repository: RepositoryDep) -> dict[str, Any]:
    runtime = resolve_model(repository, name)
    return {"name": name, "version": str(runtime.manifest.version), "ready": True}


@router.get("/models/{name}/versions/{version}/ready")
async def model_version_ready(name: str, version: VersionPath, repository: RepositoryDep) -> dict[str, Any]:
    resolve_model(repository, name, version)
    return {"name": name, "version": str(version), "ready": True}


def config(runtime: ModelRuntime, state: State) -> dict[str, Any]:
    """`state`: the app's (its settings, and the batching its scheduler runs with)."""
    settings: Settings = state.settings
    return model_config(runtime.manifest, state.schedulers.config_for(runtime.manifest.name),
                        settings.max_sequences_per_request, settings.session_idle_seconds)


def metadata(repository: Repository, runtime: ModelRuntime, versions: list[int]) -> dict[str, Any]:
    inputs, outputs = model_tensors(runtime.manifest)
    return {"name": runtime.manifest.name, "versions": [str(v) for v in versions],
            "platform": "onnxruntime_onnx", "inputs": inputs, "outputs": outputs}


async def infer(call: Call) -> Reply:
    """POST /v2/models/{name}[/versions/{v}]/infer (routed by service/api/inference.py): decode the
    tensors (service/api/v2_codec.py), run them through the model's scheduler, encode the outputs."""
    decoded = decode_request(call.body, call.header(HEADER_LENGTH.encode()))
    content, headers = encode_response(call.runtime.manifest, decoded, await answer(call, decoded))
    return content, [(k.encode(), v.encode()) for k, v in headers.items()]


async def answer(call: Call, decoded: InferRequest) -> dict[str, np.ndarray]:
    """The outputs of a decoded v2 request by name, from the model's scheduler or a held sequence; the
    gRPC servicer (service/grpc/servicer.py) answers through here too."""
    x, state = model_inputs(decoded, call.runtime.manifest, call.settings.max_sequences_per_request)
    if any(decoded.parameters.get(p) not in (None, 0, "", False) for p in SEQUENCE_PARAMETERS):
        output, next_state = await _sequence_chunk(call, decoded.parameters, x, state)
    else:
        result = await call.scheduler.run(list(x), state)
        output = np.stack(result.outputs) if isinstance(result.outputs, list) else result.outputs
        next_state = result.states
    return {OUTPUT: output, STATE_OUTPUT: next_state}


async def _sequence_chunk(call: Call, parameters: dict[str, Any], x: np.ndarray,
                          state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """sequence_id / sequence_start / sequence_end: one chunk of a server-held sequence (the semantics of
    Triton's sequence batcher), sharing the native stream's sessions and the model's scheduler."""
    runtime = call.runtime
    refusal = runtime.manifest.streaming_refusal
    if refusal:
        raise StreamingUnsupported(f"model {runtime.manifest.name!r} cannot stream: {refusal}",
                                   "parameters.sequence_id")
    sequence_id = parameters.get("sequence_id")
    if not isinstance(sequence_id, (int, str)) or isinstance(sequence_id, bool) or sequence_id in (0, ""):
        raise InvalidInput("sequence_start/sequence_end need a non-zero sequence_id (int or string)",
                           "parameters.sequence_id")
    if x.shape[0] != 1 or state is not None:
        raise InvalidInput("a sequence chunk is one sequence (x [1, time, features]) without a state: the "
                           "server holds the state", "x.shape")
    output, next_state, _ = await held_chunk(call.streaming, runtime, call.scheduler, str(sequence_id),
                                             bool(parameters.get("sequence_start")),
                                             bool(parameters.get("sequence_end")), x[0])
    return output[None], next_state[None]  # batch axis back: output [1, ...], next_state [1, S]
