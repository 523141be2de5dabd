"""Annotated dependencies that keep route signatures short. They are `async def` on purpose: FastAPI
runs a plain `def` dependency in the threadpool, a thread hop per dependency per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.errors import ModelNotFound
from service.logs import note_model
from service.repository import Repository
from service.runtime import ModelRuntime


async def get_repository(request: Request) -> Repository:
    return request.app.state.repository


def resolve_model(repository: Repository, name: str, version: int | None = None) -> ModelRuntime:
    """The runtime a request holds for its whole duration: a reload meanwhile does not change it."""
    runtime = repository.get(name, version)
    if runtime is None:
        if version is not None and repository.get(name) is not None:
            raise ModelNotFound(f"model {name!r} has no loaded version {version}; loaded versions: "
                                f"{repository.versions(name)}", "version")
        raise ModelNotFound(f"no model named {name!r}; loaded models: {sorted(repository.models)}", "name")
    note_model(name, runtime.manifest.version)
    return runtime


async def get_model(name: str, repository: Annotated[Repository, Depends(get_repository)]) -> ModelRuntime:
    return resolve_model(repository, name)


RepositoryDep = Annotated[Repository, Depends(get_repository)]
ModelDep = Annotated[ModelRuntime, Depends(get_model)]
