"""Request limits enforced in ASGI, so that they hold whatever HTTP server runs the app:

- the request line and headers: at most GRU_MAX_HEADER_BYTES bytes and GRU_MAX_HEADER_COUNT fields (431);
  each header the server reads given at most once, and HTTP/1.1's Host exactly once (400 naming it);
- Content-Encoding: gzip and deflate bodies are decoded here, within the body limit (a zip bomb meets the
  limit, not the memory); any other encoding gets 415, and so does a Transfer-Encoding but chunked;
- the body: over GRU_MAX_BODY_BYTES (declared or as it arrives, before or after decoding) gets 413; a body
  slower than GRU_BODY_TIMEOUT_S gets 408.

What ASGI cannot see (headers that never end, slow headers, idle and surplus connections) is the HTTP
server's job: service/api/transport.py configures and extends uvicorn for it.
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.errors import (
    ApiError,
    BodyTimeout,
    BodyTooLarge,
    HeadersTooLarge,
    MalformedBody,
    MalformedRequest,
    UnsupportedEncoding,
)
from service.inference import api_of
from service.settings import Settings

DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # deflate is zlib-wrapped (RFC 9110)
STRIPPED = (b"content-encoding", b"content-length")  # the app sees the decoded body
CLOSE = {"connection": "close"}
# The headers the server (or a layer before the app) reads, each meant once (RFC 9110 5.3): given twice,
# which one counts would depend on the layer that reads it (two X-Shape lines gave one answer or two).
SINGLE = frozenset({b"host", b"content-type", b"content-length", b"content-encoding", b"authorization",
                    b"x-request-id", b"x-shape", b"x-lengths", b"inference-header-content-length"})


def header_block_size(scope: Scope) -> int:
    """The request line and header lines as sent, CRLFs included (what the server read)."""
    target = len(scope.get("raw_path") or scope["path"].encode())
    if scope.get("query_string"):
        target += 1 + len(scope["query_string"])
    request_line = len(scope["method"]) + 1 + target + len(" HTTP/1.1\r\n")
    return request_line + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2


class RequestLimits:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.max_body, self.timeout_s = settings.max_body_bytes, settings.body_timeout_s
        self.max_header_bytes, self.max_header_count = settings.max_header_bytes, settings.max_header_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            decoder = self._check_head(scope)
        except ApiError as exc:  # the body (if any) is never read: close rather than parse it as a request
            response = error_response(api_of(scope["path"]), exc.code, exc.message, exc.field, CLOSE)
            return await response(scope, receive, send)
        if decoder is not None:
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k not in STRIPPED])
        await self.app(scope, self._limited(receive, decoder), send)

    def _check_head(self, scope: Scope) -> zlib._Decompress | None:
        """Headers, declared length and encoding: refused before any of the body is read."""
        headers = scope["headers"]
        if len(headers) > self.max_header_count:
            raise HeadersTooLarge(f"the request has {len(headers)} header fields; the limit is "
                                  f"{self.max_header_count} (GRU_MAX_HEADER_COUNT)", "headers")
        size = header_block_size(scope)
        if size > self.max_header_bytes:
            raise HeadersTooLarge(f"the request line and headers take {size} bytes; the limit is "
                                  f"{self.max_header_bytes} (GRU_MAX_HEADER_BYTES)", "headers")
        declared = encoding = None
        seen: set[bytes] = set()
        for name, value in headers:
            if name in SINGLE:
                if name in seen:
                    raise MalformedRequest(f"the {name.decode()} header is given more than once; send it "
                                           "once", name.decode())
                seen.add(name)
            if name == b"content-length":
                declared = value
            elif name == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
            elif name == b"transfer-encoding" and value.strip().lower() != b"chunked":  # httptools reads
                raise UnsupportedEncoding(  # only chunked: a gzip layer would reach the app undecoded
                    f"Transfer-Encoding {value.decode('latin-1')!r} is not supported; send the body chunked "
                    "or with Content-Length, compressed with Content-Encoding: gzip or deflate if need be",
                    "transfer-encoding")
        if b"host" not in seen and scope.get("http_version") == "1.1":  # RFC 9112 3.2
            raise MalformedRequest("an HTTP/1.1 request needs a Host header", "host")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            raise BodyTooLarge(self._too_large(), "body")
        if encoding in (None, "", "identity"):
            return None
        if encoding not in DECODERS:
            raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; send the body "
                                      "uncompressed, or with gzip or deflate", "content-encoding")
        return zlib.decompressobj(DECODERS[encoding])

    def _limited(self, receive: Receive, decoder: zlib._Decompress | None) -> Receive:
        seen, decoded, body_done = 0, 0, False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal seen, decoded, body_done
            if body_done:  # later receives wait for a disconnect: no deadline there
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # not wait_for: a task per call, 3 us more (perf)
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {self.timeout_s:g} s "
                                  "(GRU_BODY_TIMEOUT_S)", "body") from None
            if message["type"] != "http.request":
                return message
            body_done = not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BodyTooLarge(self._too_large(), "body")  # mapped to 413 by the error handlers
            if decoder is not None:
                message = dict(message, body=self._decode(decoder, message.get("body", b""), decoded,
                                                          body_done))
                decoded += len(message["body"])
            return message

        return limited_receive

    def _decode(self, decoder: zlib._Decompress, data: bytes, decoded: int, last: bool) -> bytes:
        room = self.max_body - decoded
        try:
            out = decoder.decompress(data, room + 1)  # never more than one byte past the limit
        except zlib.error as exc:
            raise MalformedBody(f"the compressed body is corrupt ({exc}); check Content-Encoding",
                                "body") from None
        if len(out) > room:
            raise BodyTooLarge(self._too_large() + " once decompressed", "body")
        if last and not decoder.eof:
            raise MalformedBody("the compressed body ends before its compressed stream does", "body")
        if decoder.unused_data:  # were dropped: junk taken silently, a second gzip member's JSON cut off
            raise MalformedBody(f"the body holds {len(decoder.unused_data)} byte(s) after its compressed "
                                "stream (a second gzip member, or junk); compress the body as one stream",
                                "body")
        return out

    def _too_large(self) -> str:
        return f"the request body is over the {self.max_body}-byte limit (GRU_MAX_BODY_BYTES); send " \
               "fewer sequences per request"
