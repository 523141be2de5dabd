"""The dynamic batcher in-process, over real onnxruntime sessions of tiny real models."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from service.batching import Batcher, BatcherPool, QueueFull
from service.runtime import InferenceError, ModelRuntime
from service.settings import BatchConfig, Settings


@pytest.fixture(scope="module")
def italy(repository: Path) -> ModelRuntime:
    runtime = ModelRuntime(repository / "italy" / "1", Settings())
    runtime.load()
    return runtime


def _sequences(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 60)), 1)).astype(np.float32) for _ in range(count)]


def test_grouped_run_equals_each_sequence_alone(italy: ModelRuntime) -> None:
    sequences = _sequences(40, seed=1)
    together = italy.predict_many(sequences)
    alone = np.concatenate([italy.predict(seq[None]) for seq in sequences])
    assert np.abs(together - alone).max() <= 1e-5


def test_concurrent_callers_get_their_own_rows(italy: ModelRuntime) -> None:
    requests = [_sequences(int(k % 3) + 1, seed=k) for k in range(60)]

    async def main() -> list[np.ndarray]:
        batcher = Batcher(italy, BatchConfig(max_batch_size=16))
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(seqs) for seqs in requests))
        finally:
            await batcher.stop()

    for seqs, rows in zip(requests, asyncio.run(main()), strict=True):
        expected = np.concatenate([italy.predict(seq[None]) for seq in seqs])
        assert rows.shape == expected.shape and np.abs(rows - expected).max() <= 1e-5


def test_onnxruntime_failure_fails_only_its_request(italy: ModelRuntime, caplog) -> None:
    good = _sequences(5, seed=3)
    bad = np.ones((7, 2), np.float32)  # two features: onnxruntime itself rejects the input shape

    async def main() -> list[np.ndarray | BaseException]:
        batcher = Batcher(italy, BatchConfig(max_batch_size=64))
        batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit([s]) for s in good[:3]), batcher.submit([bad]),
                                           *(batcher.submit([s]) for s in good[3:]), return_exceptions=True)
            results.append(await batcher.submit([good[0]]))  # still serving afterwards
            return results
        finally:
            await batcher.stop()

    with caplog.at_level(logging.WARNING, "gru_serve.batching"):
        results = asyncio.run(main())
    assert isinstance(results[3], InferenceError) and "onnxruntime failed" in str(results[3])
    answers = [r for i, r in enumerate(results) if i != 3]
    for seq, rows in zip(good + [good[0]], answers, strict=True):
        assert isinstance(rows, np.ndarray)
        assert np.abs(rows - italy.predict(seq[None])).max() <= 1e-5
    assert "retrying them one by one" in caplog.text


def test_full_queue_refuses_at_once_and_stop_drains(italy: ModelRuntime) -> None:
    async def main() -> tuple[list[np.ndarray | BaseException], list[np.ndarray]]:
        batcher = Batcher(italy, BatchConfig(max_batch_size=4, max_queue_size=3))
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(_sequences(1, k)) for k in range(6)),
                                       return_exceptions=True)
        big = await batcher.submit(_sequences(10, 9))  # larger than the queue: runs when nothing else does
        pending = asyncio.gather(*(batcher.submit(_sequences(1, k)) for k in range(3)))
        await asyncio.sleep(0)
        await batcher.stop()  # what was queued before stop is still answered
        return results, [big, *await pending]

    results, drained = asyncio.run(main())
    assert [isinstance(r, QueueFull) for r in results] == [False] * 3 + [True] * 3
    assert drained[0].shape == (10, 2) and all(rows.shape == (1, 2) for rows in drained[1:])


def test_per_model_overrides_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GRU_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("GRU_MODEL_BATCHING", '{"mid": {"max_batch_size": 32, "max_queue_delay_ms": 2}}')
    defaults, overrides = Settings().batch_configs()
    assert defaults.max_batch_size == 8 and overrides["mid"].max_batch_size == 32
    assert overrides["mid"].max_queue_delay_ms == 2
    assert overrides["mid"].max_queue_size == defaults.max_queue_size
    pool = BatcherPool(defaults, overrides)
    assert pool.defaults.max_batch_size == 8


def test_a_reloaded_model_gets_a_new_batcher(repository: Path, italy: ModelRuntime) -> None:
    reloaded = ModelRuntime(repository / "italy" / "1", Settings())
    reloaded.load()
    seq = _sequences(1, 5)

    async def main() -> tuple[bool, np.ndarray, np.ndarray]:
        pool = BatcherPool(BatchConfig())
        pool.start()
        first = pool.get(italy)
        before = await first.submit(seq)
        second = pool.get(reloaded)
        after = await second.submit(seq)
        await pool.stop()
        return first is not second and first._closing, before, after

    replaced, before, after = asyncio.run(main())
    assert replaced and np.abs(before - after).max() <= 1e-6


def test_versions_of_one_model_keep_their_own_batchers(repository: Path, tmp_path: Path,
                                                      italy: ModelRuntime) -> None:
    """Two versions served side by side must not replace each other's batcher on every request; the
    repository's on_unload hook (retire) stops only the retired version's batcher."""
    import json
    import shutil

    shutil.copytree(repository / "italy" / "1", tmp_path / "italy" / "2")
    manifest = tmp_path / "italy" / "2" / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"version": 2}))
    v2 = ModelRuntime(tmp_path / "italy" / "2", Settings())
    v2.load()

    async def main() -> tuple[bool, bool, bool]:
        pool = BatcherPool(BatchConfig())
        pool.start()
        first, second = pool.get(italy), pool.get(v2)
        stable = pool.get(italy) is first and pool.get(v2) is second
        pool.retire(italy)
        await asyncio.sleep(0.05)
        retired_only_v1 = first._closing and not second._closing
        await pool.stop()
        return stable, retired_only_v1, pool.get(italy) is not first

    stable, retired_only_v1, fresh = asyncio.run(main())
    assert stable and retired_only_v1 and fresh
