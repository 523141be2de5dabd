"""The app factory: settings -> repository loaded in the lifespan -> routes and error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service.api.errors import install_error_handlers
from service.api.limits import BodySizeLimit
from service.api.routes import health, models, predict, stream
from service.repository import Repository
from service.settings import Settings
from service.streaming.hub import StreamingHub

log = logging.getLogger("gru_serve")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    repository = Repository(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(repository.load_all)  # a bad bundle fails start-up with its reason
        log.info("ready: %d model(s) from %s", len(repository.models), settings.model_repository)
        yield
        repository.ready = False

    app = FastAPI(
        title="gru-serve",
        version="0.1.0",
        description="GRU sequence models (classification, forecasting, per-step tagging) served with "
        "onnxruntime; whole sequences or streamed in chunks with carried state.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.repository = settings, repository
    app.state.streaming = StreamingHub(settings)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    for module in (health, models, predict, stream):
        app.include_router(module.router)
    return app
