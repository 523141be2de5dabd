"""The scheduler in-process, over real onnxruntime sessions of tiny real models."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from export.verify import TOLERANCE
from service import batching, metrics
from service.batching import (
    PADDING_FACTOR,
    QueueFull,
    Result,
    Scheduler,
    SchedulerPool,
    SchedulerStopped,
    compute_now,
    plan_runs,
)
from service.runtime import InferenceError, ModelRuntime
from service.settings import BatchConfig, Settings


@pytest.fixture(scope="module")
def italy(repository: Path) -> ModelRuntime:
    runtime = ModelRuntime(repository / "italy" / "1", Settings())
    runtime.load()
    return runtime


@pytest.fixture(scope="module")
def vowels(ragged_repository: Path) -> ModelRuntime:
    """12 features, 2 layers, streams: carried states."""
    runtime = ModelRuntime(ragged_repository / "vowels_uni" / "1", Settings())
    runtime.load()
    return runtime


def _sequences(count: int, seed: int, features: int = 1, longest: int = 60) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, longest)), features)).astype(np.float32)
            for _ in range(count)]


def _alone(runtime: ModelRuntime, sequence: np.ndarray, state: np.ndarray | None = None):
    result = compute_now(runtime, [sequence], None if state is None else state[None])
    output, next_state = result.outputs[0], result.states[0]
    return output, next_state


def _sample(name: str, runtime: ModelRuntime, **labels: str) -> float:
    m = runtime.manifest
    metrics.flush_deferred()  # the per-batch figures are written with the request log's
    return REGISTRY.get_sample_value(name, {"model": m.name, "version": str(m.version), **labels}) or 0.0


async def _serve(runtime: ModelRuntime, config: BatchConfig, requests: list, hold: bool = False) -> list:
    """Run `requests` ((sequences, states) pairs) through a fresh scheduler; with `hold`, all are queued
    before the inference thread may look, so that they form one batch."""
    scheduler = Scheduler(runtime, config)
    scheduler.start()
    try:
        if not hold:
            return await asyncio.gather(*(scheduler.run(s, st) for s, st in requests), return_exceptions=True)
        with scheduler._ready:  # the queue's lock (reentrant): the thread waits until all are queued
            tasks = [asyncio.ensure_future(scheduler.run(s, st)) for s, st in requests]
            await asyncio.sleep(0.01)
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await scheduler.stop()


def test_runs_keep_padding_within_the_factor_and_the_batch_size() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = sorted(rng.integers(1, 300, int(rng.integers(1, 150))).tolist(), reverse=True)
        max_batch = int(rng.integers(1, 70))
        runs = plan_runs(lengths, max_batch, PADDING_FACTOR)
        assert [i for run in runs for i in range(len(lengths))[run]] == list(range(len(lengths)))
        for run in runs:
            group = lengths[run]
            assert 1 <= len(group) <= max_batch
            assert len(group) * group[0] <= PADDING_FACTOR * sum(group) or len(group) == 1
    assert plan_runs([5, 5, 4, 4, 4, 1], 64, 1.0) == [slice(0, 2), slice(2, 5), slice(5, 6)]
    assert plan_runs([], 64, 1.25) == []


def test_concurrent_callers_get_their_own_rows(italy: ModelRuntime) -> None:
    requests = [(_sequences(int(k % 3) + 1, seed=k), None) for k in range(60)]
    results = asyncio.run(_serve(italy, BatchConfig(max_batch_size=16), requests))
    for (sequences, _), result in zip(requests, results, strict=True):
        assert isinstance(result, Result) and result.outputs.shape == (len(sequences), 2)
        for sequence, row, state in zip(sequences, result.outputs, result.states, strict=True):
            output, next_state = _alone(italy, sequence)
            assert np.abs(row - output).max() <= TOLERANCE
            assert np.abs(state - next_state).max() <= TOLERANCE


def test_every_api_shares_one_batch_with_exact_answers(vowels: ModelRuntime) -> None:
    """Whole sequences (predict), a chunk continuing a carried state (stream) and a block of equal-length
    sequences with states (v2) in one batch: each answer equals its sequence run alone."""
    rng = np.random.default_rng(1)
    prefix = rng.normal(size=(5, 12)).astype(np.float32)
    _, carried = _alone(vowels, prefix)
    block = rng.normal(size=(3, 9, 12)).astype(np.float32)
    block_states = rng.normal(size=(3, vowels.manifest.state.size)).astype(np.float32)
    requests = [(_sequences(2, seed=2, features=12, longest=20), None),  # predict
                ([rng.normal(size=(7, 12)).astype(np.float32)], carried[None]),  # stream
                (list(block), block_states)]  # v2 with a state input
    runs_before = _sample("gru_batch_padding_ratio_count", vowels)
    results = asyncio.run(_serve(vowels, BatchConfig(), requests, hold=True))
    assert _sample("gru_batch_padding_ratio_count", vowels) - runs_before <= 3  # one batch, few runs
    for (sequences, states), result in zip(requests, results, strict=True):
        assert isinstance(result, Result)
        for i, sequence in enumerate(sequences):
            output, next_state = _alone(vowels, sequence, None if states is None else states[i])
            assert np.abs(result.outputs[i] - output).max() <= TOLERANCE
            assert np.abs(result.states[i] - next_state).max() <= TOLERANCE


def test_mixed_lengths_run_in_groups_of_similar_length(italy: ModelRuntime) -> None:
    requests = [(_sequences(1, seed=k, longest=200), None) for k in range(64)]
    runs, within = ("gru_batch_padding_ratio_count", "gru_batch_padding_ratio_bucket")
    before = _sample(runs, italy), _sample(within, italy, le="1.25")
    results = asyncio.run(_serve(italy, BatchConfig(), requests, hold=True))
    assert all(isinstance(r, Result) for r in results)
    new_runs = _sample(runs, italy) - before[0]
    assert 1 < new_runs < 32  # split by length, yet far fewer runs than sequences
    assert _sample(within, italy, le="1.25") - before[1] == new_runs  # every run within the factor


def test_max_batch_size_bounds_every_run(italy: ModelRuntime) -> None:
    sequences = [np.ones((24, 1), np.float32)] * 100  # one request larger than a batch
    count, total = "gru_batch_size_count", "gru_batch_size_sum"
    before = _sample(count, italy), _sample(total, italy)
    [result] = asyncio.run(_serve(italy, BatchConfig(max_batch_size=16), [(sequences, None)]))
    assert isinstance(result, Result) and result.outputs.shape == (100, 2)
    assert _sample(count, italy) - before[0] == 7 and _sample(total, italy) - before[1] == 100  # 6x16 + 4


def test_onnxruntime_failure_fails_only_its_request(italy: ModelRuntime, caplog) -> None:
    good = _sequences(5, seed=3)
    bad = np.ones((7, 2), np.float32)  # two features: onnxruntime itself rejects the input shape
    requests = [([s], None) for s in good[:3]] + [([bad], None)] + [([s], None) for s in good[3:]]
    with caplog.at_level(logging.WARNING, "gru_serve.batching"):
        results = asyncio.run(_serve(italy, BatchConfig(max_batch_size=64), requests, hold=True))
    assert isinstance(results[3], InferenceError) and "onnxruntime failed" in str(results[3])
    answers = [r for i, r in enumerate(results) if i != 3]
    for sequence, result in zip(good, answers, strict=True):
        assert isinstance(result, Result)
        assert np.abs(result.outputs[0] - _alone(italy, sequence)[0]).max() <= TOLERANCE
    assert "retrying them one by one" in caplog.text


def test_full_queue_refuses_at_once_and_stop_drains(italy: ModelRuntime) -> None:
    async def main() -> tuple[list, list[Result]]:
        scheduler = Scheduler(italy, BatchConfig(max_batch_size=4, max_queue_size=3))
        scheduler.start()
        results = await asyncio.gather(*(scheduler.run(_sequences(1, k)) for k in range(6)),
                                       return_exceptions=True)
        big = await scheduler.run(_sequences(10, 9))  # larger than the queue: runs when nothing else does
        pending = asyncio.gather(*(scheduler.run(_sequences(1, k)) for k in range(3)))
        await asyncio.sleep(0)
        await scheduler.stop()  # what was queued before stop is still answered
        with pytest.raises(SchedulerStopped):  # and nothing after
            await scheduler.run(_sequences(1, 0))
        return results, [big, *await pending]

    results, drained = asyncio.run(main())
    assert [isinstance(r, QueueFull) for r in results] == [False] * 3 + [True] * 3
    assert drained[0].outputs.shape == (10, 2) and all(r.outputs.shape == (1, 2) for r in drained[1:])


def test_a_queue_holding_more_work_than_the_wait_limit_refuses(italy: ModelRuntime, monkeypatch) -> None:
    """Full also means more work queued than max_queue_wait_ms at the rate measured on earlier batches."""
    monkeypatch.setattr(batching, "INLINE_MAX_S", 0.0)  # every request queues, none runs on the loop

    async def main() -> tuple[float, list]:
        scheduler = Scheduler(italy, BatchConfig(max_queue_size=1000))
        scheduler.start()
        try:
            await scheduler.run(_sequences(8, 0))  # a first batch: the rate is measured
            per_sequence = scheduler._seconds_per_sequence
            scheduler.config = BatchConfig(max_queue_size=1000, max_queue_wait_ms=1000 * per_sequence * 10.5)
            with scheduler._ready:  # nothing runs while they queue: the work in flight only grows
                tasks = [asyncio.ensure_future(scheduler.run(_sequences(1, k))) for k in range(20)]
                await asyncio.sleep(0.01)
            return per_sequence, await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await scheduler.stop()

    per_sequence, results = asyncio.run(main())
    assert per_sequence > 0
    assert [isinstance(r, QueueFull) for r in results] == [False] * 10 + [True] * 10
    assert "GRU_MAX_QUEUE_WAIT_MS" in str(results[-1]) and "ms of work" in str(results[-1])


def test_a_lone_short_request_runs_on_the_event_loop_with_the_same_answer(italy: ModelRuntime,
                                                                          monkeypatch) -> None:
    """Nothing in flight and a run shorter than INLINE_MAX_S: answered without the inference thread
    (here it cannot take the queue's lock), exactly as the thread answers it."""
    monkeypatch.setattr(batching, "INLINE_MAX_S", 1.0)  # whatever a busy machine makes of the first run
    sequence = _sequences(1, seed=5)

    async def main() -> tuple[Result, Result]:
        scheduler = Scheduler(italy, BatchConfig())
        scheduler.start()
        try:
            queued = await scheduler.run(sequence)  # the first: through the thread, which learns the rate
            assert 0 < scheduler._seconds_per_sequence <= batching.INLINE_MAX_S
            with scheduler._ready:
                inline = await asyncio.wait_for(scheduler.run(sequence), 5)
            return queued, inline
        finally:
            await scheduler.stop()

    queued, inline = asyncio.run(main())
    assert np.array_equal(queued.outputs, inline.outputs) and np.array_equal(queued.states, inline.states)
    assert np.abs(inline.outputs[0] - _alone(italy, sequence[0])[0]).max() <= TOLERANCE


def test_requests_a_few_loop_turns_apart_share_one_run(italy: ModelRuntime, monkeypatch) -> None:
    """grpc.aio hands its calls to the loop about one per turn: an idle scheduler gathers until
    GATHER_TURNS turns pass without a new request, so such requests still meet in one batch."""
    monkeypatch.setattr(batching, "INLINE_MAX_S", 1.0)
    runs: list[int] = []
    original = ModelRuntime.run
    monkeypatch.setattr(ModelRuntime, "run",
                        lambda self, x, *rest: runs.append(len(x)) or original(self, x, *rest))
    sequence = np.random.default_rng(3).standard_normal((20, 1)).astype(np.float32)

    async def main() -> None:
        scheduler = Scheduler(italy, BatchConfig())
        scheduler.start()

        async def after_turns(turns: int) -> Result:
            for _ in range(turns):
                await asyncio.sleep(0)
            return await scheduler.run([sequence])
        try:
            await scheduler.run([sequence])  # the first: the rate is learnt
            runs.clear()
            await asyncio.gather(*(after_turns(k * (batching.GATHER_TURNS // 2)) for k in range(4)))
        finally:
            await scheduler.stop()

    asyncio.run(main())
    assert runs == [4]


def test_per_model_overrides_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GRU_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("GRU_MODEL_BATCHING", '{"mid": {"max_batch_size": 32, "max_queue_delay_ms": 2}}')
    defaults, overrides = Settings().batch_configs()
    assert defaults.max_batch_size == 8 and overrides["mid"].max_batch_size == 32
    assert overrides["mid"].max_queue_delay_ms == 2
    assert overrides["mid"].max_queue_size == defaults.max_queue_size
    pool = SchedulerPool(defaults, overrides)
    assert pool.config_for("other").max_batch_size == 8 and pool.config_for("mid").max_batch_size == 32


def test_a_reloaded_model_gets_a_new_scheduler(repository: Path, italy: ModelRuntime) -> None:
    reloaded = ModelRuntime(repository / "italy" / "1", Settings())
    reloaded.load()
    seq = _sequences(1, 5)

    async def main() -> tuple[bool, Result, Result]:
        pool = SchedulerPool(BatchConfig())
        pool.start()
        first = pool.get(italy)
        before = await first.run(seq)
        second = pool.get(reloaded)
        after = await second.run(seq)
        await pool.stop()
        return first is not second and first._closing, before, after

    replaced, before, after = asyncio.run(main())
    assert replaced and np.abs(before.outputs - after.outputs).max() <= 1e-6


def test_versions_of_one_model_keep_their_own_schedulers(repository: Path, tmp_path: Path,
                                                        italy: ModelRuntime) -> None:
    """Two versions served side by side must not replace each other's scheduler on every request; the
    repository's on_unload hook (retire) stops only the retired version's, after it drained."""
    shutil.copytree(repository / "italy" / "1", tmp_path / "italy" / "2")
    manifest = tmp_path / "italy" / "2" / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"version": 2}))
    v2 = ModelRuntime(tmp_path / "italy" / "2", Settings())
    v2.load()

    async def main() -> tuple[bool, bool, bool, Result]:
        pool = SchedulerPool(BatchConfig())
        pool.start()
        first, second = pool.get(italy), pool.get(v2)
        stable = pool.get(italy) is first and pool.get(v2) is second
        queued = asyncio.ensure_future(first.run(_sequences(1, 6)))
        await asyncio.sleep(0)
        pool.retire(italy)
        await asyncio.sleep(0.1)
        retired_only_v1 = first._closing and not first._thread.is_alive() and second._thread.is_alive()
        await pool.stop()
        return stable, retired_only_v1, pool.get(italy) is not first, await queued

    stable, retired_only_v1, fresh, drained = asyncio.run(main())
    assert stable and retired_only_v1 and fresh and drained.outputs.shape == (1, 2)


def test_a_batching_delay_keeps_every_request_on_the_thread(italy: ModelRuntime, monkeypatch) -> None:
    """GRU_MAX_QUEUE_DELAY_MS > 0 asks for batches: even a lone short request waits for the thread (here
    held by the test), never runs on the event loop."""
    monkeypatch.setattr(batching, "INLINE_MAX_S", 1.0)
    sequence = _sequences(1, seed=5)

    async def main() -> None:
        scheduler = Scheduler(italy, BatchConfig(max_queue_delay_ms=1.0))
        scheduler.start()
        try:
            await scheduler.run(sequence)  # the thread learns the rate
            # while the test holds the lock, the thread cannot take this request
            with scheduler._ready, pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(scheduler.run(sequence)), 0.3)
        finally:
            await scheduler.stop()

    asyncio.run(main())
