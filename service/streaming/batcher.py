"""Runs the chunks of different sequences together: the first chunk to arrive waits `max_delay_s` for
others, then one padded run (per-sequence lengths and states) answers them all."""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.runtime import ModelRuntime

Answer = tuple[np.ndarray, np.ndarray]  # (output for the chunk, new state (S,))


class StepBatcher:
    def __init__(self, runtime: ModelRuntime, max_delay_s: float = 0.002, max_batch: int = 64):
        self.runtime, self.max_delay_s, self.max_batch = runtime, max_delay_s, max_batch
        self._pending: list[tuple[np.ndarray, np.ndarray | None, asyncio.Future[Answer]]] = []
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent run sizes, for tests and metrics

    async def submit(self, chunk: np.ndarray, state: np.ndarray | None) -> Answer:
        """chunk: (T, F) raw steps; state: (S,) or None for a new sequence."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((chunk, state, future))
        if len(self._pending) == 1:
            asyncio.get_running_loop().create_task(self._flush_soon())
        elif len(self._pending) >= self.max_batch:
            self._start(self._take())
        return await future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.max_delay_s)
        if self._pending:
            await self._run(self._take())

    def _take(self) -> list[tuple[np.ndarray, np.ndarray | None, asyncio.Future[Answer]]]:
        batch, self._pending = self._pending, []
        return batch

    def _start(self, batch: list) -> None:
        asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[np.ndarray, np.ndarray | None, asyncio.Future[Answer]]]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            outputs, states = await run_in_threadpool(self.runtime.step, [b[0] for b in batch],
                                                      [b[1] for b in batch])
        except Exception as exc:  # every waiting request gets the error (mapped at the edge)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), output, state in zip(batch, outputs, states, strict=True):
            if not future.done():
                future.set_result((output, state))
