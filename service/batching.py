"""Server-side dynamic batching, one batcher per model per worker process.

Requests put their sequences on a bounded queue and await their own future. One task per model takes
what is queued (up to `max_batch_size` sequences), runs it on a dedicated inference thread and hands
each caller its own rows. Adaptive: an idle batcher runs a lone request at once; under load the next
batch gathers while the current one runs, and `max_queue_delay_ms` (default 0) may add a short wait to
fill it. Mixed lengths in a batch run as one padded batch whose GRUs stop at each sequence's length
(ModelRuntime.predict_many), so every answer is exactly what the sequence gets alone. A failed run is
retried request by request, so one bad request fails only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.runtime import InferenceError, ModelRuntime
from service.settings import BatchConfig

log = logging.getLogger("gru_serve.batching")
Rows = np.ndarray | list[np.ndarray]  # (N, O); tagging: one (T_i, O) array per sequence


class QueueFull(Exception):
    """The model's queue holds `max_queue_size` sequences; the caller should retry later."""


@dataclass
class _Request:
    sequences: list[np.ndarray]
    future: asyncio.Future[Rows]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class Batcher:
    runtime: ModelRuntime
    config: BatchConfig
    _pending: deque[_Request] = field(default_factory=deque, init=False)
    _in_flight: int = field(default=0, init=False)  # sequences queued or running
    _queued: int = field(default=0, init=False)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _full: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _executor: ThreadPoolExecutor | None = field(default=None, init=False)
    _closing: bool = field(default=False, init=False)

    def start(self) -> None:
        name = self.runtime.manifest.name
        labels = (name, str(self.runtime.manifest.version))
        self._depth = metrics.QUEUE_DEPTH.labels(*labels)
        self._wait = metrics.QUEUE_WAIT_SECONDS.labels(*labels)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{name}")

    async def stop(self) -> None:
        """Finish what is queued, then end the task and the inference thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def check_room(self, count: int = 1) -> None:
        """Raise QueueFull unless `count` more sequences fit. The fast path asks before it reads and
        parses a body, so that shedding load costs as little as possible."""
        # A request larger than the whole queue still runs when nothing else is in flight.
        if self._closing or (self._in_flight and self._in_flight + count > self.config.max_queue_size):
            raise QueueFull(f"model {self.runtime.manifest.name!r} has {self._in_flight} sequence(s) "
                            f"in flight; the limit is {self.config.max_queue_size}")

    async def submit(self, sequences: list[np.ndarray]) -> Rows:
        """Queue one request's sequences and wait for their (len, outputs) rows, in order."""
        count = len(sequences)
        self.check_room(count)
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(sequences, future))
        self._in_flight += count
        self._queued += count
        self._depth.set(self._queued)
        if self._queued >= self.config.max_batch_size:
            self._full.set()
        self._wakeup.set()
        return await future

    async def _serve(self) -> None:
        busy = False
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                busy = False  # woke from idle: run what is there, no added wait
                continue
            if busy and self.config.max_queue_delay_ms and self._queued < self.config.max_batch_size:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.config.max_queue_delay_ms / 1000)
            batch = self._take()
            if batch:
                await self._run(batch)
            busy = True

    def _take(self) -> list[_Request]:
        """Whole requests up to max_batch_size sequences (at least one request)."""
        batch: list[_Request] = []
        size = 0
        while self._pending:
            request = self._pending[0]
            if batch and size + len(request.sequences) > self.config.max_batch_size:
                break
            self._pending.popleft()
            self._queued -= len(request.sequences)
            self._depth.set(self._queued)
            self._wait.observe(time.perf_counter() - request.queued_at)
            if request.future.done():  # the caller went away
                self._in_flight -= len(request.sequences)
                continue
            batch.append(request)
            size += len(request.sequences)
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        sequences = [seq for request in batch for seq in request.sequences]
        try:
            try:
                outputs = await loop.run_in_executor(self._executor, self.runtime.predict_many, sequences)
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0], exc)
                    return
                log.warning("batch of %d requests failed (%s); retrying them one by one", len(batch), exc)
                for request in batch:
                    try:
                        rows = await loop.run_in_executor(
                            self._executor, self.runtime.predict_many, request.sequences)
                    except Exception as single:
                        _fail(request, single)
                    else:
                        _answer(request, rows)
                return
            start = 0
            for request in batch:
                end = start + len(request.sequences)
                _answer(request, outputs[start:end])
                start = end
        finally:
            self._in_flight -= len(sequences)


def _answer(request: _Request, rows: Rows) -> None:
    if not request.future.done():
        request.future.set_result(rows)


def _fail(request: _Request, exc: Exception) -> None:
    if not request.future.done():
        error = exc if isinstance(exc, InferenceError) else InferenceError(f"inference failed: {exc}")
        request.future.set_exception(error)


class BatcherPool:
    """The batchers of one worker process, one per loaded model version, created on first use. A version
    the repository retires (reload, unload, shutdown) answers what it holds, then stops."""

    def __init__(self, defaults: BatchConfig, overrides: dict[str, BatchConfig] | None = None):
        self.defaults, self.overrides = defaults, overrides or {}
        self._batchers: dict[tuple[str, int], Batcher] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def get(self, runtime: ModelRuntime) -> Batcher:
        key = (runtime.manifest.name, runtime.manifest.version)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.runtime is not runtime:  # first use, or the version was reloaded
            if batcher is not None:
                self._retire(batcher)
            batcher = Batcher(runtime, self.overrides.get(key[0], self.defaults))
            self._batchers[key] = batcher
            batcher.start()
        return batcher

    def retire(self, runtime: ModelRuntime) -> None:
        """The repository's on_unload hook; it may run on a worker thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._retire_runtime, runtime)

    def _retire_runtime(self, runtime: ModelRuntime) -> None:
        key = (runtime.manifest.name, runtime.manifest.version)
        batcher = self._batchers.get(key)
        if batcher is not None and batcher.runtime is runtime:
            del self._batchers[key]
            self._retire(batcher)

    def _retire(self, batcher: Batcher) -> None:
        task = asyncio.get_running_loop().create_task(batcher.stop())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def stop(self) -> None:
        await asyncio.gather(*(batcher.stop() for batcher in self._batchers.values()), *self._retiring)
        self._batchers.clear()
