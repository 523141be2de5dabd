"""bench/loadgen.py's open and closed loops over gRPC: unary calls of one method (ModelInfer) with
pre-serialized requests, on grpc.aio channels, one record per call in loadgen's `Records`, so that
bench/overload.py reads an HTTP run and a gRPC run alike.

An outcome is OK; REFUSED: the status the service gives a full queue (service/errors.py: queue_full)
with `gru-error-code: queue_full` and `retry-after` in the trailing metadata; ERROR: UNAVAILABLE without
the service's error code (gRPC's status for a connection that failed or broke) or no answer by the end;
OTHER: any other status (recorded by its number, grpc.StatusCode's); UNSENT: `max_calls` calls were in
flight already. Latency runs from the call to its status.

A channel is one HTTP/2 connection; a new one opens when every open one carries `STREAMS` calls (below
the server's GRU_GRPC_MAX_STREAMS_PER_CONNECTION, so that no call waits in the client for a stream).
grpc.aio costs far more of the generator's CPU per call than loadgen's HTTP requests: what one core
reaches, against the gRPC floor (bench/baselines/grpc_floor.py, a constant answer) on the other core:

    python -m bench.grpc_loadgen --seconds 4

(the "offered" check of bench/overload.py says when a burst asked for more).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from urllib.parse import urlsplit

import grpc

from bench.loadgen import ERROR, OK, OTHER, REFUSED, UNSENT, Driver, Phase, Records, run_loop
from service.errors import ERROR_TABLE
from service.grpc.generated.grpc_service_pb2 import ModelInferRequest

REFUSAL = grpc.StatusCode[ERROR_TABLE["queue_full"].grpc]
STREAMS = 64  # calls in flight on one channel
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)  # channels to one target share one otherwise


class GrpcLoadGenerator(Driver):
    def __init__(self, target: str, method: str, bodies: list[bytes], max_calls: int = 1024):
        """`target`: host:port; `method`: /package.Service/Method; `bodies`: serialized requests, in turn."""
        super().__init__()
        self.target, self.method, self.bodies, self.max_calls = target, method, bodies, max_calls
        self._next = 0
        self._channels: list[grpc.aio.Channel] = []
        self._methods: list[grpc.aio.UnaryUnaryMultiCallable] = []  # per channel
        self._in_flight_on: list[int] = []  # per channel
        self._free: list[int] = []  # channels with fewer than STREAMS calls in flight
        self._calls: dict[asyncio.Task, tuple[float, int]] = {}  # call -> (sent at, phase)

    def _in_flight(self) -> int:
        return len(self._calls)

    async def _finish(self, drain_timeout: float) -> None:
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=drain_timeout)
        unanswered = list(self._calls.items())
        for call, _ in unanswered:
            call.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)
        for _, (sent_at, phase) in unanswered:
            self.records.unanswered += 1
            self._record(sent_at, time.perf_counter() - sent_at, ERROR, phase)
        for channel in self._channels:
            await channel.close()

    def _send_one(self) -> None:
        if len(self._calls) >= self.max_calls:
            self.records.unsent += 1
            self._record(time.perf_counter(), 0.0, UNSENT, self._phase)
            return
        if not self._free:
            self._open_channel()
        channel = self._free[-1]
        self._in_flight_on[channel] += 1
        if self._in_flight_on[channel] == STREAMS:
            self._free.pop()
        self._next = (self._next + 1) % len(self.bodies)
        call = asyncio.get_running_loop().create_task(self._call(channel, self.bodies[self._next]))
        self._calls[call] = (time.perf_counter(), self._phase)

    def _open_channel(self) -> None:
        channel = grpc.aio.insecure_channel(self.target, OWN_CONNECTION)
        self._channels.append(channel)
        self._methods.append(channel.unary_unary(self.method))  # bytes in, bytes out: no (de)serializing
        self._in_flight_on.append(0)
        self._free.append(len(self._channels) - 1)
        self.records.connections_opened += 1

    async def _call(self, channel: int, body: bytes) -> None:
        try:
            await self._methods[channel](body)
            kind = OK
        except grpc.aio.AioRpcError as exc:
            kind = self._classify(exc)
        sent_at, phase = self._calls.pop(asyncio.current_task())  # type: ignore[arg-type]
        self._record(sent_at, time.perf_counter() - sent_at, kind, phase)
        self._in_flight_on[channel] -= 1
        if self._in_flight_on[channel] == STREAMS - 1:
            self._free.append(channel)
        if time.perf_counter() < self._closed_loop_until:
            self._send_one()

    def _classify(self, exc: grpc.aio.AioRpcError) -> int:
        trailing = dict(exc.trailing_metadata() or ())
        code = exc.code()
        if code == REFUSAL and trailing.get("gru-error-code") == "queue_full" and "retry-after" in trailing:
            return REFUSED
        if code == grpc.StatusCode.UNAVAILABLE and "gru-error-code" not in trailing:
            return ERROR
        number = code.value[0]
        self.records.statuses[number] = self.records.statuses.get(number, 0) + 1
        self.records.examples.setdefault(number, f"{code.name}: {exc.details()} {trailing}"[:400])
        return OTHER


def generate(url: str, bodies: list[bytes], phases: list[Phase], max_calls: int = 1024) -> Records:
    """Call `url` (grpc://host:port/package.Service/Method) with the serialized requests `bodies` through
    the phases, in a fresh event loop (as loadgen.generate)."""
    parts = urlsplit(url)
    return run_loop(GrpcLoadGenerator(parts.netloc, parts.path, bodies, max_calls).run(phases))


def main(argv: list[str] | None = None) -> int:
    """The generator on one core, the gRPC floor on the others: calls/s in closed loop (`--clients`), and
    the rate it offers in open loop when asked for far more than it can send; its CPU µs per call."""
    from bench.grpc_load import GRPC_METHOD, grpc_floor
    from bench.placement import loadavg, pin_tree, placement, this_thread_on

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rate", type=float, default=50_000.0, help="the open loop's asked rate, calls/s")
    args = parser.parse_args(argv)
    split = placement("split")
    body = ModelInferRequest(model_name="small").SerializeToString()
    with grpc_floor(1) as (floor, port), this_thread_on(split.generator):
        pin_tree(floor.pid, split.server)
        url = f"grpc://127.0.0.1:{port}{GRPC_METHOD}"
        for phase in (Phase("closed", args.seconds, connections=args.clients),
                      Phase("open", args.seconds, rate=args.rate)):
            generate(url, [body], [Phase("warm-up", 1.0, connections=args.clients)])
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            records = generate(url, [body], [phase], max_calls=4096)
            after = resource.getrusage(resource.RUSAGE_SELF)
            used = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
            sent, ok = len(records.kind) - records.unsent, records.kind.count(OK)
            print(f"{split.describe()}, {phase.name} loop: {sent / args.seconds:7.0f} calls/s sent, "
                  f"{ok / args.seconds:7.0f} answered OK/s, {1e6 * used / max(sent, 1):4.0f} generator CPU "
                  f"µs per call, unsent {records.unsent}, load {loadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
