"""The outermost layer of every request: a request id (the caller's X-Request-ID or a new one) in the log
context and the response header, auth, the in-flight gauge, one access log line and the request metrics."""

from __future__ import annotations

import logging
import time

from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
from service.api.auth import HEALTH_PATHS, Authenticator
from service.api.errors import error_response

log = logging.getLogger("gru_serve.access")
QUIET_PATHS = HEALTH_PATHS | {"/metrics"}  # probes and scrapes: logged at debug, not counted
INFERENCE_SUFFIXES = ("/predict", "/stream", "/infer")
CHECKED_METHODS = frozenset({"GET", "HEAD", "POST"})


class RequestMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, access_log: bool = True,
                 router: Router | None = None):
        self.app, self.auth, self.access_log, self.router = app, authenticator, access_log, router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        path = scope["path"]
        given_id = headers.get(b"x-request-id", b"").decode("latin-1")
        context = logs.RequestContext(logs.request_id_from(given_id), method=scope["method"], path=path)
        token = logs.current.set(context)
        started, status = time.perf_counter(), 500
        quiet = path in QUIET_PATHS

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", context.request_id.encode())]
            await send(message)

        if not quiet:
            metrics.IN_FLIGHT.inc()
        try:
            denial = self.auth.check(path, headers.get(b"authorization", b"").decode("latin-1") or None)
            if denial is not None and scope["method"] in self.routed_methods():
                extra = {"www-authenticate": 'Bearer realm="gru-serve"'} if denial.status == 401 else None
                code = "unauthorized" if denial.status == 401 else "forbidden"
                response = error_response(path, code, denial.message, "authorization", extra)
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            if not quiet:
                metrics.IN_FLIGHT.dec()
                api = "v2" if path == "/v2" or path.startswith("/v2/") else "native"
                record(context, api, status, duration, path.endswith(INFERENCE_SUFFIXES))
            level = logging.DEBUG if quiet or not self.access_log else logging.INFO
            if log.isEnabledFor(level):
                log.log(level, "%s %s %s", scope["method"], path, status,
                        extra={"status": status, "duration_ms": round(duration * 1000, 3)})
            logs.current.reset(token)

    def routed_methods(self) -> frozenset[str]:
        """The methods a handler may take: GET, HEAD and POST always (the inference operations may be
        answered outside the router), and those of the router's routes. A request with another method
        reaches no handler (405 or 404), so it needs no token, and gets 405 whatever its token."""
        routes = self.router.routes if self.router is not None else []
        return CHECKED_METHODS | {m for route in routes for m in getattr(route, "methods", None) or ()}


def record(context: logs.RequestContext, api: str, status: int, duration: float, inference: bool) -> None:
    """One request's metrics, on any API (the gRPC servicer records its calls here too)."""
    model = context.model or ""
    version = str(context.version) if context.version is not None else ""
    metrics.REQUESTS.labels(model, version, api, str(status)).inc()
    if model:
        metrics.REQUEST_SECONDS.labels(model, api).observe(duration)
        if inference:  # for the v2 statistics (service/api/v2_model.py)
            metrics.INFERENCE_REQUESTS.labels(model, version, "success" if status == 200 else "fail") \
                .observe(duration)
            if status == 200:
                metrics.LAST_INFERENCE.labels(model, version).set(time.time())
