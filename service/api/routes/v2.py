"""Open Inference Protocol (KServe v2) over REST, beside the native API: server and model metadata,
health, readiness per model and version, configuration and statistics. Inference (`infer`) is an
operation of the table (service/inference.py), answered by service/api/front.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import State

from service.api.deps import RepositoryDep, VersionPath
from service.api.responses import NumpyJSONResponse
from service.inference import resolve_model
from service.runtime import ModelRuntime
from service.v2_model import SERVER_NAME, SERVER_VERSION, metadata, model_config_for, statistics

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics", "sequence"]


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
    """Triton's model configuration, derived from the manifest (service/v2_model.py)."""
    return config(resolve_model(repository, name), request.app.state)


@router.get("/models/{name}/versions/{version}/config")
async def model_version_configuration(name: str, version: VersionPath, repository: RepositoryDep,
                                      request: Request) -> dict[str, Any]:
    return config(resolve_model(repository, name, version), request.app.state)


@router.get("/models/{name}")
async def model_metadata(name: str, repository: RepositoryDep) -> dict[str, Any]:
    return metadata(resolve_model(repository, name).manifest, repository.versions(name))


@router.get("/models/{name}/versions/{version}")
async def model_version_metadata(name: str, version: VersionPath,
                                 repository: RepositoryDep) -> dict[str, Any]:
    runtime = resolve_model(repository, name, version)
    return metadata(runtime.manifest, [runtime.manifest.version])


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
    return model_config_for(runtime.manifest, state.services)
