"""Annotated dependencies that keep route signatures short."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.errors import ModelNotFound
from service.batching import BatcherPool
from service.repository import Repository
from service.runtime import ModelRuntime
from service.settings import Settings


def get_repository(request: Request) -> Repository:
    return request.app.state.repository


def get_batchers(request: Request) -> BatcherPool:
    return request.app.state.batchers


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_model(name: str, repository: Annotated[Repository, Depends(get_repository)]) -> ModelRuntime:
    runtime = repository.get(name)
    if runtime is None:
        raise ModelNotFound(f"no model named {name!r}; loaded models: {sorted(repository.models)}", "name")
    return runtime


RepositoryDep = Annotated[Repository, Depends(get_repository)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BatchersDep = Annotated[BatcherPool, Depends(get_batchers)]
ModelDep = Annotated[ModelRuntime, Depends(get_model)]
