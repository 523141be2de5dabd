"""The app factory: settings -> repository loaded in the lifespan -> the transport layers, the inference
front (service/api/front.py, over service/inference.py), FastAPI's routes and error handlers.

The lifespan also runs the folder watch (GRU_POLL_INTERVAL_S) and, on shutdown, retires every loaded
version through the repository's on_unload hooks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from service import logs, metrics, tracing
from service.api.errors import install_error_handlers
from service.api.front import InferenceFront, LoadShedder, Refusals
from service.api.limits import RequestLimits
from service.api.middleware import RequestLog, RequestMiddleware
from service.api.openapi import install_openapi
from service.api.routes import health, models, v2
from service.api.routes import metrics as metrics_routes
from service.api.routes import repository as repository_routes
from service.api.traced import TracedHTTP
from service.api.transport import install_shedder
from service.auth import HEALTH_PATHS, ROUTE_GROUPS, Authenticator, is_loopback
from service.batching import SchedulerPool
from service.codecs.native import StateCodec
from service.inference import Services
from service.repository import Hook, Repository
from service.sessions import SessionStore
from service.settings import Settings

log = logging.getLogger("gru_serve")


class Service(FastAPI):
    """The app uvicorn runs: `front` (plain ASGI: load shedding; request ids, auth, metrics and the access
    log; the body limit; the inference operations) first, FastAPI for every other route (health,
    metadata, admin). A layer that must apply to every request goes into `front`, not add_middleware:
    FastAPI's own layers cost more per request than the whole inference path (measured) and the
    inference operations never enter them."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await super().__call__(scope, receive, send)
        await self.front(scope, receive, send)


def create_app(settings: Settings | None = None, on_load: list[Hook] | None = None,
               on_unload: list[Hook] | None = None) -> Service:
    settings = settings or Settings()
    schedulers = SchedulerPool(*settings.batch_configs())
    secret = settings.state_secret.get_secret_value().encode() if settings.state_secret else b""
    tokens = StateCodec.with_secret(secret)
    sessions = SessionStore(settings.max_sessions, settings.session_idle_seconds)
    repository = Repository(settings, on_load, [schedulers.retire, *(on_unload or [])])
    authenticator = Authenticator(settings)  # a missing token file stops start-up here
    logs.capture_warnings()  # in every worker process: Python warnings become JSON log lines
    metrics.set_build_info()
    tracing.configure(settings)  # GRU_TRACING: a tracer per worker process
    requests = RequestLog(settings.access_log)  # access log lines and request metrics, written in batches

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        announce_security(settings, authenticator)
        schedulers.start()
        await run_in_threadpool(repository.load_all)  # a bad bundle is reported, never stops start-up
        log.info("ready: %d model(s) from %s (version policy %s)", len(repository.models),
                 settings.model_repository, settings.version_policy)
        gc.freeze()  # what start-up built lives on: the collector no longer walks it (~5% of a request)
        watch = asyncio.create_task(watch_folder(repository, settings.poll_interval_s))
        grpc_server = None
        if settings.grpc_port:  # imported only then: grpcio adds ~17 MB to a worker
            from service.grpc.server import start as start_grpc
            grpc_server = await start_grpc(app.state, authenticator)
        try:
            yield
        finally:
            if grpc_server is not None:  # in-flight calls finish, as HTTP requests do
                await grpc_server.stop(settings.shutdown_timeout_s)
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            await schedulers.stop()  # answer what is queued, then end the inference threads
            await run_in_threadpool(repository.close)
            requests.flush()
            metrics.mark_worker_exit()
            tracing.shutdown()  # the last spans exported
            log.info("stopped")

    app = Service(
        title="gru-serve",
        version="0.1.0",
        description="GRU sequence models (classification, forecasting, per-step tagging) served with "
        "onnxruntime; whole sequences or streamed in chunks with carried state.",
        lifespan=lifespan,
        redirect_slashes=False,  # a 307 built from the Host header (any host a client names); a 404 says why
    )
    app.state.settings, app.state.repository, app.state.schedulers = settings, repository, schedulers
    app.state.refusals, app.state.requests = Refusals(schedulers), requests
    app.state.services = services = Services(settings, repository, schedulers, tokens, sessions)
    # The transport, built inside out: a request meets LoadShedder first, then RequestMiddleware and
    # RequestLimits (headers 431, encoding 415, body 413/408); the inference operations end at
    # InferenceFront, every other route in FastAPI. (Limits only a server can enforce: transport.py.)
    answer: ASGIApp = InferenceFront(head_as_get(partial(FastAPI.__call__, app)), services)
    answer = RequestLimits(answer, settings=settings)
    answer = RequestMiddleware(answer, authenticator=authenticator, requests=requests, router=app.router)
    app.front = LoadShedder(answer, services, app.state.refusals, authenticator)  # full queue: refused first
    install_shedder(app.front.refusal)  # under uvicorn, before the request is built (transport.py)
    if tracing.enabled:  # only then: while off, tracing costs nothing per request
        app.front = TracedHTTP(app.front)
    install_error_handlers(app)
    for module in (health, models, v2, repository_routes, metrics_routes):
        app.include_router(module.router)
    install_openapi(app, authenticator)  # the operations per loaded model, exact schemas, every status
    return app


def head_as_get(app: ASGIApp) -> ASGIApp:
    """HEAD answered as GET (RFC 9110 9.3.2; load balancers probe health with it): FastAPI routes GET
    only. The server sends the answer's headers without its body, as its own scope still says HEAD."""

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await app(scope, receive, send)

    return call


def announce_security(settings: Settings, auth: Authenticator) -> None:
    """Say at start-up exactly who can call which routes (from the same rules that check requests);
    shout when inference is reachable without a token from beyond this machine."""
    where = f"{settings.host}:{settings.port}"
    rules = {group: auth.rule(path) for group, path in ROUTE_GROUPS.items()}
    log.info("auth: %s; listening on %s%s", "; ".join(f"{group}: {rule}" for group, rule in rules.items()),
             where, " (loopback: only this machine can connect)" if is_loopback(settings.host) else "")
    if is_loopback(settings.host):
        return
    open_groups = [group for group, rule in rules.items() if rule == "open" and ROUTE_GROUPS[group] not in
                   HEALTH_PATHS | {"/metrics"}]
    if open_groups:
        log.warning("SECURITY: bound to %s, beyond loopback, and open without a token: %s. Anyone who can "
                    "reach this port can use them. Set GRU_API_TOKENS and GRU_ADMIN_TOKENS (or *_FILE), or "
                    "bind to 127.0.0.1", where, "; ".join(open_groups))


async def watch_folder(repository: Repository, interval: float) -> None:
    """Poll the repository folder; a failed poll is logged and the next one tries again."""
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            for report in await run_in_threadpool(repository.poll):
                log.info("folder watch: %s loaded %s, unloaded %s, failed %s; serving %s", report.name,
                         report.loaded, report.unloaded, sorted(report.failed), report.serving)
        except Exception:
            log.exception("folder watch: scanning %s failed", repository.settings.model_repository)
