"""What the scheduler adds to one unloaded request, in process (no HTTP): `python -m bench.handoff`.

One request at a time on a uvloop event loop, the bench models' single sequences:
  runtime.run          the session alone (ModelRuntime.run, batch 1): the floor
  scheduler, inline    Scheduler.run with the inference thread idle: the run on the event loop
  scheduler, thread    Scheduler.run through the inference thread (INLINE_MAX_S = 0): the loop wakes
                       the thread, the thread runs and wakes the loop (two hand-offs per request)
Rounds interleave the three; prints p50/p99 µs per request and the process's CPU µs per request (both
threads), medians over rounds, with the load average.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import uvloop

from bench.models import MODELS, build
from bench.placement import loadavg
from bench.run import RESULTS


async def timed(call: Callable[[], Awaitable[object]], requests: int) -> dict[str, float]:
    latency = np.empty(requests)
    cpu = time.process_time()
    for i in range(requests):
        started = time.perf_counter()
        await call()
        latency[i] = time.perf_counter() - started
    cpu = time.process_time() - cpu
    return {"p50_us": float(np.percentile(latency, 50) * 1e6),
            "p99_us": float(np.percentile(latency, 99) * 1e6), "cpu_us": cpu / requests * 1e6}


async def measure(bundle: Path, steps: int, features: int, requests: int, rounds: int) -> dict[str, dict]:
    from service import batching
    from service.runtime import ModelRuntime
    from service.settings import BatchConfig, Settings

    runtime = ModelRuntime(bundle, Settings())
    runtime.load()
    scheduler = batching.Scheduler(runtime, BatchConfig())
    scheduler.start()
    x = np.random.default_rng(0).standard_normal((steps, features)).astype(np.float32)
    inline_max = batching.INLINE_MAX_S

    async def direct() -> object:
        return runtime.run(x[None])

    async def inline() -> object:
        batching.INLINE_MAX_S = inline_max
        return await scheduler.run([x])

    async def thread() -> object:
        batching.INLINE_MAX_S = 0.0
        return await scheduler.run([x])

    ways = {"runtime.run": direct, "scheduler, inline": inline, "scheduler, thread": thread}
    await thread()  # the scheduler learns the model's rate (a lone request runs inline only then)
    rows: dict[str, list[dict]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, call in ways.items():
            rows[name].append(await timed(call, requests))
    batching.INLINE_MAX_S = inline_max
    await scheduler.stop()
    return {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    bundles = build(args.results / "work")
    print(f"one request at a time, in process; medians over {args.rounds} rounds of {args.requests}; "
          f"load average {loadavg()}")
    for model in MODELS:
        result = uvloop.run(measure(bundles[model.name], model.steps, model.features, args.requests,
                                    args.rounds))
        for name, r in result.items():
            print(f"  {model.name:<6} {name:<18} p50 {r['p50_us']:7.0f} µs  p99 {r['p99_us']:7.0f} µs  "
                  f"CPU {r['cpu_us']:6.0f} µs/request")
    print(f"load average at the end {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
