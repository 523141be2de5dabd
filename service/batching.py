"""The scheduler: one per loaded model version per worker process, shared by every API.

Every API (native predict and stream, Open Inference Protocol infer) decodes its body into sequences
(T_i, F) float32 and, when it carries them, their states (S,), and submits them here. One bounded queue
counts the sequences of every API; a full queue refuses at once (QueueFull, mapped to 503 `queue_full`).
Full means `max_queue_size` sequences, or more work than `max_queue_wait_ms` at the rate the model has
been running (so that what is admitted is answered in bounded time whatever the model's speed). One
inference thread takes what is queued, runs it and hands each caller its rows.

The thread does the batching itself, so admitted work needs the event loop only to queue a request and
to wake its caller: under overload, when the loop is busy refusing, the model keeps running. A lone
request (nothing in flight) whose run is short runs on the event loop itself, sparing the two thread
hand-offs; under load the next batch gathers while the current one runs, and
`max_queue_delay_ms` may add a short wait to fill it. A batch is whole requests in arrival order, up to
`max_batch_size` sequences; it runs as one or more padded runs of similar lengths (`plan_runs`), whose
GRUs stop at each sequence's length, so every answer is exactly what the sequence gets alone. A failed
run is retried one sequence at a time, so one bad request fails only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from service import metrics, tracing
from service.runtime import InferenceError, ModelRuntime
from service.settings import BatchConfig

log = logging.getLogger("gru_serve.batching")
# A run's padded steps stay within this factor of its real steps (graphs with a lengths input; without
# one, only equal lengths share a run). Measured (bench/lengths.py, mid, lengths 8-128, batches of 64):
# one padded run per batch pads 1.85x and runs 345 seq/s; these runs (5 per batch) 1.24x and 735 seq/s.
PADDING_FACTOR = 1.25
# A lone request whose run is expected to take at most this long runs on the event loop (Scheduler.run):
# the small and mid bench models do (about 0.05 and 0.3 ms at batch 1), heavier ones go to the thread.
INLINE_MAX_S = 0.001
# An idle scheduler gathers requests until this many turns of the event loop pass without a new one.
# Concurrent HTTP requests meet in one turn (uvicorn reads every ready socket in it), but grpc.aio admits
# about one call per turn (its server loop awaits each call before asking for the next), so under load
# gRPC requests need several turns to meet. Measured (bench/grpc_load.py, small, 32 clients): 1 turn:
# gRPC batches of 1.1, 16 turns: 5.8 and twice the req/s; one client's latency unchanged (an empty
# turn costs microseconds).
GATHER_TURNS = 16


class QueueFull(Exception):
    """The model's queue is full (max_queue_size sequences or max_queue_wait_ms of work); retry later."""


class SchedulerStopped(Exception):
    """The version was retired and its queue drained: run the request on the version serving now."""


@dataclass(frozen=True, slots=True)
class Result:
    outputs: np.ndarray | list[np.ndarray]  # (N, O); tagging: one (T_i, O) array per sequence
    states: np.ndarray  # (N, S): each sequence's state after its last step


@dataclass(eq=False, slots=True)
class Work:
    """One request's sequences on their way through the scheduler; the thread fills in the answer."""

    sequences: list[np.ndarray]  # (T_i, F) float32
    states: np.ndarray | None  # (N, S) carried states; None: every sequence starts from zeros
    future: asyncio.Future[Result] | None  # None: computed on the caller's thread (compute_now)
    queued_at: float = field(default_factory=time.perf_counter)
    outputs: list[np.ndarray | None] = field(default_factory=list)  # per sequence, filled by the runs
    next_states: list[np.ndarray | None] = field(default_factory=list)
    result: Result | None = None
    error: Exception | None = None
    trace: tracing.RequestTrace | None = None  # the request's, while tracing is on (service/tracing.py)

    @property
    def gone(self) -> bool:
        """The caller stopped waiting (cancelled) before its answer; read on the inference thread too."""
        return self.future is not None and self.future.done()

    def answer(self, per_step: bool) -> None:
        """All runs done: the rows in request order, unless one of them failed."""
        if self.error is None:
            outputs = self.outputs if per_step else _rows(self.outputs)
            self.result = Result(outputs, _rows(self.next_states))  # type: ignore[arg-type]


def _rows(rows: list[np.ndarray | None]) -> np.ndarray:
    """(N, ...) from N rows; one row (most requests) becomes a view, not a copy."""
    return rows[0][None] if len(rows) == 1 else np.stack(rows)  # type: ignore[index,arg-type]


class Scheduler:
    def __init__(self, runtime: ModelRuntime, config: BatchConfig):
        self.runtime, self.config = runtime, config
        manifest = runtime.manifest
        self._runs = Runs(runtime, config.max_batch_size)
        self._queue: deque[Work] = deque()
        self._queued = 0  # sequences in the queue; guarded by _ready's lock
        self._in_flight = 0  # sequences queued or running; touched on the event loop only
        self._gathered: list[Work] | None = None  # this turn's requests, while an idle scheduler gathers
        self._seconds_per_sequence = 0.0  # recent batches' run time per sequence; written by the thread
        self._ready = threading.Condition()
        self._closing = False  # retired: answer what comes until the queue is empty, then stop
        self._stopped = False  # the thread has ended; guarded by _ready's lock
        self._thread = threading.Thread(target=self._serve, name=f"infer-{manifest.name}", daemon=True)
        labels = (manifest.name, str(manifest.version))
        self._depth = metrics.QUEUE_DEPTH.labels(*labels)
        self._wait = metrics.deferred(metrics.QUEUE_WAIT_SECONDS.labels(*labels))
        self._per_request = metrics.deferred(metrics.SEQUENCES_PER_REQUEST.labels(manifest.name))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._thread.start()

    async def stop(self) -> None:
        """Answer what is queued (and gathered), then end the inference thread."""
        if self._gathered is not None:
            self._run_gathered()
        with self._ready:
            self._closing = True
            self._ready.notify()
        await asyncio.shield(self._ended)

    def check_room(self, count: int = 1) -> None:
        """Raise QueueFull unless `count` more sequences fit. The API front asks before it reads a body,
        so that shedding load costs as little as possible."""
        # A request larger than the whole queue still runs when nothing else is in flight.
        if not self._in_flight:
            return
        name, total = self.runtime.manifest.name, self._in_flight + count
        if total > self.config.max_queue_size:
            raise QueueFull(f"model {name!r} has {self._in_flight} sequence(s) in flight; the limit is "
                            f"GRU_MAX_QUEUE_SIZE={self.config.max_queue_size}")
        wait_s = total * self._seconds_per_sequence
        if self.config.max_queue_wait_ms and wait_s * 1000 > self.config.max_queue_wait_ms:
            raise QueueFull(f"model {name!r} has {self._in_flight} sequence(s) in flight, about "
                            f"{wait_s * 1000:.0f} ms of work at its measured rate; the limit is "
                            f"GRU_MAX_QUEUE_WAIT_MS={self.config.max_queue_wait_ms:g}")

    async def run(self, sequences: list[np.ndarray], states: np.ndarray | None = None) -> Result:
        """Queue one request's sequences (and their carried states) and wait for its answer. When nothing
        is in flight and the run is short, the requests that come until the event loop turns GATHER_TURNS
        times without one are gathered first (`_gather`): one alone runs on the loop (`_run_gathered`),
        several go to the thread as one batch."""
        count = len(sequences)
        self.check_room(count)
        future: asyncio.Future[Result] = self._loop.create_future()
        work = Work(sequences, states, future)
        if tracing.enabled:
            work.trace = tracing.queued(work.queued_at, count)
        if self._gathered is not None:
            self._gathered.append(work)
            self._in_flight += count
        elif not self._in_flight and not self._closing and not self.config.max_queue_delay_ms and \
                0 < count * self._seconds_per_sequence <= INLINE_MAX_S:  # a batching delay asks for batches
            self._gathered = [work]
            self._in_flight += count
            self._loop.call_soon(self._gather, 0, 1)
        else:
            self._queue_up([work])
        result = await future
        if work.trace is not None:
            tracing.answered(work.trace)
        return result

    def _queue_up(self, works: list[Work]) -> None:
        with self._ready:
            if self._stopped:
                raise SchedulerStopped(f"model {self.runtime.manifest.name!r} version "
                                       f"{self.runtime.manifest.version} was retired")
            for work in works:
                self._in_flight += len(work.sequences)
                self._queue.append(work)
                self._queued += len(work.sequences)
            self._ready.notify()

    def _gather(self, quiet_turns: int, seen: int) -> None:
        """Once a turn while an idle scheduler gathers: run what came once GATHER_TURNS turns have passed
        without a new request, or a batch is full."""
        if self._gathered is None:  # run already (stop)
            return
        gathered = len(self._gathered)
        quiet_turns = 0 if gathered > seen else quiet_turns + 1
        if quiet_turns < GATHER_TURNS and self._in_flight < self.config.max_batch_size:
            self._loop.call_soon(self._gather, quiet_turns, gathered)
        else:
            self._run_gathered()

    def _run_gathered(self) -> None:
        """On the event loop, once the gathered requests have called `run`. One alone, with the thread
        idle (nothing else in flight): the same run here, without the two thread hand-offs (wake the
        thread, wake the loop) that cost an unloaded request more than the model does (measured:
        bench/handoff.py); the loop is blocked for at most about INLINE_MAX_S. Several: the thread's."""
        batch, self._gathered = self._gathered or [], None
        if len(batch) == 1 and not self._closing:
            self._observe(batch)
            started = time.perf_counter()
            self._runs.compute(batch)  # not learnt from: the queue's wait is at the thread's (batched) rate
            if tracing.enabled:
                tracing.batch_ran(self.runtime.manifest, batch, started, time.perf_counter())
            self._deliver(batch)
            return
        for work in batch:
            self._in_flight -= len(work.sequences)
        try:
            self._queue_up(batch)
        except SchedulerStopped as exc:
            for work in batch:
                if work.future is not None and not work.future.done():
                    work.future.set_exception(exc)

    # --- the inference thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        busy = False
        delay = self.config.max_queue_delay_ms / 1000
        while True:
            with self._ready:
                if not self._queue:
                    busy = False  # idle: the next request runs at once, no added wait
                    self._ready.wait_for(lambda: self._queue or self._closing)
                    if not self._queue:
                        self._stopped = True  # closing, and everything queued was answered
                        break
                if busy and delay and self._queued < self.config.max_batch_size:
                    self._ready.wait_for(lambda: self._queued >= self.config.max_batch_size or self._closing,
                                         delay)
                batch = self._take()
            self._observe(batch)
            started = time.perf_counter()
            self._runs.compute(batch)
            ended = time.perf_counter()
            if tracing.enabled:
                tracing.batch_ran(self.runtime.manifest, batch, started, ended)
            self._learn_rate(batch, ended - started)
            self._deliver_soon(batch)
            busy = True
        self._loop.call_soon_threadsafe(self._ended.set_result, None)

    def _take(self) -> list[Work]:
        """Whole requests in arrival order, up to max_batch_size sequences (at least one request)."""
        batch: list[Work] = []
        size = 0
        while self._queue:
            count = len(self._queue[0].sequences)
            if batch and size + count > self.config.max_batch_size:
                break
            work = self._queue.popleft()
            self._queued -= count
            batch.append(work)
            size += count
        self._depth.set(self._queued)
        return batch

    def _observe(self, batch: list[Work]) -> None:
        """The batch's requests in the metrics (written with the request log's, metrics.Deferred)."""
        now = time.perf_counter()
        self._wait.extend([now - w.queued_at for w in batch])
        self._per_request.extend([len(w.sequences) for w in batch])

    def _learn_rate(self, batch: list[Work], seconds: float) -> None:
        """Seconds per sequence, averaged over the last few batches (under load, batches are full and this
        is the model's real rate; alone, a request's own run time)."""
        per_sequence = seconds / sum(len(w.sequences) for w in batch)
        last = self._seconds_per_sequence
        self._seconds_per_sequence = per_sequence if not last else last + 0.25 * (per_sequence - last)

    def _deliver_soon(self, batch: list[Work]) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (exiting): nobody is waiting
            self._loop.call_soon_threadsafe(self._deliver, batch)

    def _deliver(self, batch: list[Work]) -> None:
        """On the event loop: one wake-up per batch answers every caller in it."""
        for work in batch:
            self._in_flight -= len(work.sequences)
            future = work.future
            if future is None or future.done():  # the caller went away
                continue
            if work.result is not None:
                future.set_result(work.result)
            else:
                future.set_exception(work.error or InferenceError("inference failed"))


class Runs:
    """How a batch is computed, on the scheduler's thread (or the caller's: `compute_now`): its
    sequences, longest first, cut into padded runs of similar lengths (`plan_runs`); each sequence's
    output and next state back into its request. A failed run is retried one sequence at a time."""

    def __init__(self, runtime: ModelRuntime, max_batch_size: int):
        self.runtime, self.max_batch_size = runtime, max_batch_size
        manifest = runtime.manifest
        self._per_step = manifest.output.head.per_step
        self._padding = PADDING_FACTOR if manifest.takes_lengths else 1.0
        labels = (manifest.name, str(manifest.version))
        self._padding_ratio = metrics.deferred(metrics.PADDING_RATIO.labels(*labels))

    def compute(self, batch: list[Work]) -> None:
        live = [w for w in batch if not w.gone]  # gone callers need no run
        try:
            for work in live:
                work.outputs, work.next_states = [None] * len(work.sequences), [None] * len(work.sequences)
            items = [(w, i) for w in live for i in range(len(w.sequences))]
            items.sort(key=lambda item: len(item[0].sequences[item[1]]), reverse=True)
            lengths = [len(w.sequences[i]) for w, i in items]
            for run in plan_runs(lengths, self.max_batch_size, self._padding):
                running = items[run]
                if any(w.gone for w in live):  # gone meanwhile (a gRPC cancel, a deadline): not run on
                    running = [item for item in running if not item[0].gone]
                if running:
                    self._run_items(running)
            for work in live:
                if not work.gone:
                    work.answer(self._per_step)
        except Exception as exc:  # a bug, not a bad input: fail the batch, keep the thread
            log.exception("scheduling a batch of %d requests failed", len(live))
            for work in live:
                work.error = InferenceError(f"inference failed: {exc}")

    def _run_items(self, items: list[tuple[Work, int]]) -> None:
        """One padded run; when it fails, each sequence alone, so that only the bad ones fail."""
        try:
            x, lengths = pad_batch([w.sequences[i] for w, i in items])
            output, next_state = self.runtime.run(x, lengths, self._states(items))
        except Exception as exc:
            if len(items) > 1:
                log.warning("a run of %d sequences failed (%s); retrying them one by one", len(items), exc)
                for item in items:
                    self._run_items([item])
            else:
                items[0][0].error = exc if isinstance(exc, InferenceError) else InferenceError(
                    f"inference failed: {exc}")
            return
        self._padding_ratio.observe(x.shape[0] * x.shape[1] / int(lengths.sum()))
        for row, (work, i) in enumerate(items):
            work.outputs[i] = output[row, : lengths[row]] if self._per_step else output[row]
            work.next_states[i] = next_state[row]

    def _states(self, items: list[tuple[Work, int]]) -> np.ndarray | None:
        """(B, S) carried states for a run, zeros for new sequences; None when all are new."""
        if all(w.states is None for w, _ in items):
            return None
        state = np.zeros((len(items), self.runtime.manifest.state.size), np.float32)
        for row, (work, i) in enumerate(items):
            if work.states is not None:
                state[row] = work.states[i]
        return state


def compute_now(runtime: ModelRuntime, sequences: list[np.ndarray], states: np.ndarray | None = None,
                max_batch_size: int = 64) -> Result:
    """One request's sequences (T_i, F), with their carried states (N, S) or None, computed on the
    calling thread exactly as the scheduler computes a batch (tests, benches, tools): what is served is
    what is tested."""
    work = Work(sequences, states, None)
    Runs(runtime, max_batch_size).compute([work])
    if work.result is None:
        raise work.error or InferenceError("inference failed")
    return work.result


def pad_batch(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(T_i, F) arrays -> zero-padded (B, max T, F) float32 and (B,) int32 lengths."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    steps = int(lengths.max())
    if (lengths == steps).all():
        return np.stack(sequences), lengths
    x = np.zeros((len(sequences), steps, sequences[0].shape[1]), dtype=np.float32)
    for i, seq in enumerate(sequences):
        x[i, : len(seq)] = seq
    return x, lengths


def plan_runs(lengths: list[int], max_batch: int, factor: float) -> list[slice]:
    """Cut sequences sorted longest first into runs of at most `max_batch` whose padded steps (count x
    longest) stay within `factor` x their real steps."""
    runs, start, real = [], 0, 0
    for end, length in enumerate(lengths):
        size = end - start
        if size and (size == max_batch or (size + 1) * lengths[start] > factor * (real + length)):
            runs.append(slice(start, end))
            start, real = end, 0
        real += length
    if start < len(lengths):
        runs.append(slice(start, len(lengths)))
    return runs


class SchedulerPool:
    """The schedulers of one worker process, one per loaded model version, created on first use. A
    version the repository retires (reload, unload, shutdown) answers what it holds, then stops."""

    def __init__(self, defaults: BatchConfig, overrides: dict[str, BatchConfig] | None = None):
        self.defaults, self.overrides = defaults, overrides or {}
        self._schedulers: dict[tuple[str, int], Scheduler] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def config_for(self, name: str) -> BatchConfig:
        return self.overrides.get(name, self.defaults)

    def get(self, runtime: ModelRuntime) -> Scheduler:
        key = (runtime.manifest.name, runtime.manifest.version)
        scheduler = self._schedulers.get(key)
        if scheduler is None or scheduler.runtime is not runtime:  # first use, or the version was reloaded
            if scheduler is not None:
                self._retire(scheduler)
            scheduler = Scheduler(runtime, self.config_for(key[0]))
            self._schedulers[key] = scheduler
            scheduler.start()
        return scheduler

    def retire(self, runtime: ModelRuntime) -> None:
        """The repository's on_unload hook; it may run on a worker thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._retire_runtime, runtime)

    def _retire_runtime(self, runtime: ModelRuntime) -> None:
        key = (runtime.manifest.name, runtime.manifest.version)
        scheduler = self._schedulers.get(key)
        if scheduler is not None and scheduler.runtime is runtime:
            del self._schedulers[key]
            self._retire(scheduler)

    def _retire(self, scheduler: Scheduler) -> None:
        task = asyncio.get_running_loop().create_task(scheduler.stop())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self._schedulers.values()), *self._retiring)
        self._schedulers.clear()
