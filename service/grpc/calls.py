"""What every gRPC call gets, as an HTTP request gets it from RequestMiddleware: a request id (the
caller's `x-request-id` metadata or a new one, sent back in the trailing metadata), the bearer token in
the `authorization` metadata checked by the same Authenticator under the REST path of the operation, one
access log line, and the request metrics with api="grpc" and, as `status`, the HTTP status REST gives
for the same outcome (queue_full refusals go to the per-second refusal summary instead, as REST's do).

The gRPC edge of the one error table (service/errors.py): a domain error's code, message and field (as
REST's v2 answer states them), sent with the gRPC status the table gives the code, and `gru-error-code`
and `gru-error-field` in the trailing metadata.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from starlette.datastructures import State

from service import logs, tracing
from service.auth import Authenticator, Denial
from service.errors import CLIENT_GONE, DOMAIN_ERRORS, ERROR_TABLE, describe
from service.inference import BY_VERB, GRPC_SERVICE

log = logging.getLogger("gru_serve.access")
READ = ("authorization", "x-request-id")  # the metadata a call's scope reads
# Error details and fields can quote what a client sent (a 1 MB parameter name): they go back in headers,
# which clients cap (8 KiB by default), so they are cut to this many characters.
MAX_DETAIL = 2048


@dataclass
class Failure(Exception):
    """A refused call: the REST API's status and code for it, its message and field, Retry-After."""

    status: int
    code: str
    message: str
    field: str | None = None
    retry_after: str | None = None

    @property
    def grpc_status(self) -> grpc.StatusCode:
        kind = ERROR_TABLE.get(self.code)
        return grpc.StatusCode[kind.grpc] if kind else grpc.StatusCode.INTERNAL

    def metadata(self, request_id: str) -> tuple[tuple[str, str], ...]:
        items = [("x-request-id", request_id), ("gru-error-code", self.code)]
        if self.field:  # a field can name a client's key: metadata takes printable ASCII only (else INTERNAL)
            field = self.field if self.field.isascii() and self.field.isprintable() else ascii(self.field)
            items.append(("gru-error-field", field[:MAX_DETAIL]))
        if self.retry_after:  # REST's header, and gRPC's own retry pushback
            items += [("retry-after", self.retry_after),
                      ("grpc-retry-pushback-ms", str(int(self.retry_after) * 1000))]
        return tuple(items)


SHUTTING_DOWN = Failure(503, "unavailable", "the server is shutting down: this stream is closed; open a new "
                        "one (to another replica, or once the server is back)")


def failure(exc: Exception, method: str) -> Failure:
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, DOMAIN_ERRORS):
        operation = BY_VERB.get(method)
        problem = describe(exc, operation.error_field if operation is not None else None)
        retry_after = str(problem.retry_after) if problem.retry_after is not None else None
        return Failure(problem.kind.v2_status, problem.code, problem.message, problem.field, retry_after)
    log.exception("unexpected error")
    return Failure(500, "internal", "internal error; the server log has it under this request id")


def denied(denial: Denial) -> Failure:
    message = denial.message.replace("'Authorization: Bearer <token>'", "'authorization: Bearer <token>' "
                                     "metadata")
    return Failure(denial.status, "unauthorized" if denial.status == 401 else "forbidden", message,
                   "authorization")


@dataclass(frozen=True)
class Unreadable:
    """A request message that could not be read, as `readable` and `one_message` hand it to the servicer:
    refused in the call's scope (after its token) with `problem`."""

    problem: Failure
    id: str = ""  # a ModelInferRequest's request id: none


def readable(message_type: Any) -> Callable[[bytes], Any]:
    """A request deserializer that does not raise: grpc's own answer to a message it cannot parse (junk
    bytes, a string field not UTF-8) was UNKNOWN "Unexpected DecodeError", and a traceback in the log."""
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError:
            name = message_type.DESCRIPTOR.full_name
            return Unreadable(Failure(400, "malformed_body", f"the request is not a valid {name} message "
                                      "(protobuf, its strings UTF-8); build it from the Open Inference "
                                      "Protocol's grpc_service.proto", "message"))
    return parse


Unary = Callable[[Any, Any], Awaitable[Any]]


def one_message(behavior: Unary, type_name: str, timeout_s: float, calls_open: StreamCount) -> Unary:
    """A unary RPC's behavior, served as a stream-unary one so that its message is read here: one that
    does not come within GRU_BODY_TIMEOUT_S, or a call ended without one, is refused as REST refuses a
    body that does not come. grpc's own unary handling waited for ever, the call holding one of the
    GRU_MAX_CONNECTIONS call slots: 21 connections of 100 such calls held them all. The call counts in
    its client's `calls_open` (StreamCount) until grpc has finished it."""
    async def handle(requests: Any, context: Any) -> Any:
        try:
            calls_open.open_until_done(client_address(context.peer()), context)
        except Failure as over:  # refused in the call's scope, after its token
            return await behavior(Unreadable(over), context)
        try:
            async with asyncio.timeout(timeout_s):  # no task of its own, unlike wait_for (~30 us a call)
                request = await context.read()
        except TimeoutError:
            request = Unreadable(Failure(408, "body_timeout", f"the call's {type_name} message did not "
                                         f"arrive within {timeout_s:g} s (GRU_BODY_TIMEOUT_S)", "message"))
        if request is grpc.aio.EOF:
            request = Unreadable(Failure(400, "malformed_body", f"the call ended without its {type_name} "
                                         "message; send one", "message"))
        return await behavior(request, context)
    return handle


@asynccontextmanager
async def scope(state: State, auth: Authenticator, context: Any, method: str, path: str, quiet: bool = False,
                abort: bool = True, request_id: str | None = None,
                request: Any = None) -> AsyncIterator[None]:
    """One call (quiet: a probe, logged at debug and not counted), or one request on a stream. An error
    in it becomes a Failure: the call is aborted with its gRPC status, or (abort=False: a request on a
    stream) the Failure is raised. `request`: the message, refused if Unreadable."""
    pairs = context.invocation_metadata() or ()
    metadata = dict(pairs)
    traced = tracing.begin_grpc(metadata, method) if tracing.enabled and not quiet else None
    call = logs.RequestContext(logs.request_id_from(metadata.get("x-request-id") or request_id),
                               method="gRPC", path=GRPC_SERVICE + method)
    token = logs.current.set(call)
    started, refused, gone = time.perf_counter(), None, False
    if not quiet:
        state.requests.in_flight += 1
    try:
        once(pairs, state.settings.max_header_count)
        denial = auth.check(path, metadata.get("authorization"))
        if denial is not None:
            raise denied(denial)
        if isinstance(request, Unreadable):
            raise request.problem
        yield
    except asyncio.CancelledError:  # the client cancelled, or its deadline passed: nothing is sent
        gone = True
        raise
    except Exception as exc:
        refused = failure(exc, method)
    finally:
        if not quiet:
            state.requests.in_flight -= 1
        account(state, call, refused, time.perf_counter() - started, quiet, gone)
        if traced is not None:
            status = (CLIENT_GONE, grpc.StatusCode.CANCELLED) if gone else \
                (refused.status, refused.grpc_status) if refused else (200, grpc.StatusCode.OK)
            tracing.end_grpc(traced, call, *status)
        logs.current.reset(token)
    if refused is not None:
        if not abort:
            raise refused
        details = refused.message[:MAX_DETAIL]
        await context.abort(refused.grpc_status, details, refused.metadata(call.request_id))
    elif abort:
        context.set_trailing_metadata((("x-request-id", call.request_id),))


def once(pairs: Any, max_count: int) -> None:
    """At most GRU_MAX_HEADER_COUNT entries (gRPC itself caps only their bytes), and the metadata read
    here given once (as REST's headers: service/api/limits.py)."""
    if len(pairs) > max_count:
        raise Failure(431, "headers_too_large", f"the call has {len(pairs)} metadata entries; at most "
                      f"{max_count} are taken (GRU_MAX_HEADER_COUNT)", "metadata")
    keys = [key for key, _ in pairs if key in READ]
    if len(keys) != len(set(keys)):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise Failure(400, "malformed_request", f"the {twice} metadata is given more than once; send it once",
                      twice)


def account(state: State, call: logs.RequestContext, refused: Failure | None, duration: float,
            quiet: bool, gone: bool = False) -> None:
    """gone: the call was cancelled before its answer, logged and counted as REST's client gone (499)."""
    status = CLIENT_GONE if gone else refused.status if refused is not None else 200
    if refused is not None and refused.code == "queue_full" and call.model and call.version:
        state.refusals.add(call.model, call.version, "grpc")
        quiet = True
    elif not quiet:  # counted and logged with the HTTP requests (service/api/middleware.py RequestLog)
        state.requests.answered(call, status, duration)
        return
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s %s", call.method, call.path, status,
                  extra={"status": status, "duration_ms": round(duration * 1000, 3)})


def client_address(peer: str) -> str:
    """The client's address in a gRPC peer string ('ipv4:10.0.0.7:53122', 'ipv6:[::1]:53122'), port left
    out: one client, however many connections it opens."""
    return peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


class StreamCount:
    """Calls (HTTP/2 streams) open per client address, so that one client cannot hold every call slot
    (GRU_MAX_CONNECTIONS): GRU_GRPC_MAX_STREAMS_PER_CLIENT of its ModelStreamInfer streams, and as many
    unary calls, counted apart (a client with its streams open still makes unary calls). `held` says
    which, in the refusal. A unary call counts from its start until grpc has finished it, once the client
    has read the answer. Unary calls were not counted: a client that never opens its HTTP/2 flow-control
    window never reads its answers, and grpc holds such calls for as long as the connection lives (a
    refused call now and then keeps it from idling); calls whose message never comes, opened anew every
    GRU_BODY_TIMEOUT_S, did the same. 21 connections of 100 such calls held every slot of a default
    server for as long as the client stayed."""

    def __init__(self, limit: int, held: str):
        self.limit, self.held, self.open_streams = limit, held, Counter[str]()

    def open(self, client: str) -> None:
        if self.open_streams[client] >= self.limit:
            raise Failure(503, "too_many_connections", f"this client has {self.limit} {self.held}", None, "1")
        self.open_streams[client] += 1

    def open_until_done(self, client: str, context: Any) -> None:
        self.open(client)
        context.add_done_callback(lambda _: self.close(client))

    def close(self, client: str) -> None:
        self.open_streams[client] -= 1
        if self.open_streams[client] <= 0:
            del self.open_streams[client]


async def until_idle(requests: AsyncIterable[Any], idle_s: float, context: Any,
                     closing: asyncio.Event) -> AsyncIterator[Any]:
    """A stream's requests, until the client ends it or sends nothing for `idle_s` (GRU_GRPC_STREAM_IDLE_S):
    then the stream is closed with DEADLINE_EXCEEDED, as Envoy's and nginx's idle timeouts close one.
    Once `closing` is set (shutdown) it is closed with UNAVAILABLE, after the answer in progress: a stream
    does not end by itself, and shutdown would wait GRU_SHUTDOWN_TIMEOUT_S for it, then cut it."""
    iterator, closed = aiter(requests), asyncio.ensure_future(closing.wait())
    following: asyncio.Future[Any] = closed
    try:
        while True:
            following = asyncio.ensure_future(anext(iterator))
            await asyncio.wait((following, closed), timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                reason = SHUTTING_DOWN if closed.done() else Failure(
                    408, "body_timeout", f"no request on this stream for {idle_s:g} s "
                    "(GRU_GRPC_STREAM_IDLE_S): closed; open a new stream when there is more to send")
                await context.abort(reason.grpc_status, reason.message,
                                    reason.metadata(logs.request_id_from(None)))
            try:
                request = following.result()
            except StopAsyncIteration:
                return
            yield request
    finally:  # also when the call is cancelled while it waits: what these tasks bring is nobody's
        for task in (closed, following):
            if not task.cancel() and not task.cancelled():
                task.exception()  # seen: else asyncio logs "Task exception was never retrieved"
