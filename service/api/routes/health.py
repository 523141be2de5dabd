"""Liveness (the process answers) and readiness (start-up finished and a model serves, warmed up)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RepositoryDep
from service.api.responses import NumpyJSONResponse

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/ready", responses={503: {"description": "not ready: models still loading, or none"}})
async def ready(repository: RepositoryDep) -> NumpyJSONResponse:
    body = {"ready": repository.ready, "models": sorted(repository.models)}
    return NumpyJSONResponse(body, status_code=200 if repository.ready else 503)
