"""Refuses request bodies over the size limit: at once from Content-Length, or as soon as a chunked
body passes the limit, before the whole body is read. A client that trickles its body slower than the
body timeout gets 408 instead of holding a request open for ever."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import BodyTimeout, BodyTooLarge, error_response


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = error_response(scope["path"], 413, BodyTooLarge.code, self._message(), "body")
            return await response(scope, receive, send)
        seen, body_done, deadline = 0, False, time.monotonic() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if body_done:  # later receives wait for a disconnect: no deadline there
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {self.timeout_s:g} s "
                                  "(GRU_BODY_TIMEOUT_S)", "body") from None
            body_done = not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self._message(), "body")  # mapped to 413 by the error handlers
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"the request body is over the {self.max_bytes}-byte limit (GRU_MAX_BODY_BYTES); " \
               "send fewer sequences per request"
