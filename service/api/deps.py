"""Annotated dependencies that keep route signatures short. They are `async def` on purpose: FastAPI
runs a plain `def` dependency in the threadpool, a thread hop per dependency per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from service.inference import resolve_model
from service.repository import Repository
from service.runtime import ModelRuntime


async def get_repository(request: Request) -> Repository:
    return request.app.state.repository


async def get_model(name: str, repository: Annotated[Repository, Depends(get_repository)]) -> ModelRuntime:
    return resolve_model(repository, name)


# A path's version segment: taken as text, so that every spelling gets resolve_model's 404 (not FastAPI's
# 422 for some and a version for '01'); documented as the integer it must be.
VersionPath = Annotated[str, Path(json_schema_extra={"type": "integer", "minimum": 1})]
RepositoryDep = Annotated[Repository, Depends(get_repository)]
ModelDep = Annotated[ModelRuntime, Depends(get_model)]
