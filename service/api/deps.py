"""Annotated dependencies that keep route signatures short. They are `async def` on purpose: FastAPI
runs a plain `def` dependency in the threadpool, a thread hop per dependency per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.errors import ModelNotFound
from service.batching import BatcherPool
from service.repository import Repository
from service.runtime import ModelRuntime
from service.settings import Settings


async def get_repository(request: Request) -> Repository:
    return request.app.state.repository


async def get_batchers(request: Request) -> BatcherPool:
    return request.app.state.batchers


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_model(name: str, repository: Annotated[Repository, Depends(get_repository)]) -> ModelRuntime:
    return find_model(repository, name)


def find_model(repository: Repository, name: str) -> ModelRuntime:
    runtime = repository.get(name)
    if runtime is None:
        raise ModelNotFound(f"no model named {name!r}; loaded models: {sorted(repository.models)}", "name")
    return runtime


RepositoryDep = Annotated[Repository, Depends(get_repository)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BatchersDep = Annotated[BatcherPool, Depends(get_batchers)]
ModelDep = Annotated[ModelRuntime, Depends(get_model)]
