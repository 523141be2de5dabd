"""GET /metrics: Prometheus exposition text (service/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service import metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    content, media_type = metrics.render()
    return Response(content, media_type=media_type)
