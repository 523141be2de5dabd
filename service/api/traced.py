"""The HTTP side of tracing (service/tracing.py): the outermost ASGI layer while GRU_TRACING is on."""

from __future__ import annotations

import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, tracing
from service.api.middleware import QUIET_PATHS, api_of
from service.errors import CLIENT_GONE

ROUTE = re.compile(r"/models/[^/]+(/versions/[0-9]+)?")


def route_of(path: str) -> str:
    """The path with the model name and version as placeholders: a span name of few values."""
    return ROUTE.sub(lambda m: "/models/{name}" + ("/versions/{version}" if m[1] else ""), path)


class TracedHTTP:
    """A server span per HTTP request (probes and scrapes excepted), load-shedding refusals and auth
    denials included; decoding starts when the body has arrived."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or path in QUIET_PATHS:
            return await self.app(scope, receive, send)
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method, route = scope["method"], route_of(path)
        request = tracing.begin(carrier, f"{method} {route}", {
            "http.request.method": method, "url.path": path, "http.route": route, "gru.api": api_of(path)})
        status, context = 500, None  # 500: the app failed without an answer

        async def traced_receive() -> Message:
            nonlocal status
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                request.decode_from = time.perf_counter()
            elif message["type"] == "http.disconnect" and context is None:
                status = CLIENT_GONE  # before its answer: no server error
            return message

        async def traced_send(message: Message) -> None:
            nonlocal status, context
            if message["type"] == "http.response.start":  # inside the request's log context
                status, context = message["status"], logs.current.get()
            await send(message)

        try:
            await self.app(scope, traced_receive, traced_send)
        finally:
            tracing.end(request, context, status, {"http.response.status_code": status})
