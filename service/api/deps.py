"""Annotated dependencies that keep route signatures short. They are `async def` on purpose: FastAPI
runs a plain `def` dependency in the threadpool, a thread hop per dependency per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from service.api.errors import ModelNotFound
from service.logs import note_model
from service.repository import VERSION_FOLDER, Repository
from service.runtime import ModelRuntime
from service.settings import Settings


async def get_repository(request: Request) -> Repository:
    return request.app.state.repository


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def resolve_model(repository: Repository, name: str, version: str | None = None) -> ModelRuntime:
    """The runtime a request holds for its whole duration: a reload meanwhile does not change it.
    `version` as every API spells it (a path segment, gRPC's model_version): the version folders' own
    grammar, canonical ASCII digits; any other spelling ('01', '+1', '²', '٣') names no loaded version."""
    number = int(version) if version is not None and VERSION_FOLDER.fullmatch(version) else None
    runtime = repository.get(name, number) if version is None or number is not None else None
    if runtime is None:
        if version is not None and repository.get(name) is not None:
            raise ModelNotFound(f"model {name!r} has no loaded version {number or repr(version[:32])}; "
                                f"loaded versions: {repository.versions(name)}", "version")
        raise ModelNotFound(f"no model named {name!r}; loaded models: {sorted(repository.models)}", "name")
    note_model(name, runtime.manifest.version)
    return runtime


async def get_model(name: str, repository: Annotated[Repository, Depends(get_repository)]) -> ModelRuntime:
    return resolve_model(repository, name)


# A path's version segment: taken as text, so that every spelling gets resolve_model's 404 (not FastAPI's
# 422 for some and a version for '01'); documented as the integer it must be.
VersionPath = Annotated[str, Path(json_schema_extra={"type": "integer", "minimum": 1})]


async def get_model_version(name: str, version: VersionPath,
                            repository: Annotated[Repository, Depends(get_repository)]) -> ModelRuntime:
    return resolve_model(repository, name, version)


RepositoryDep = Annotated[Repository, Depends(get_repository)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelDep = Annotated[ModelRuntime, Depends(get_model)]
ModelVersionDep = Annotated[ModelRuntime, Depends(get_model_version)]
