"""bench/lengths.py in-process, briefly: the scheduler's runs pad less than one run per batch."""

from __future__ import annotations

from pathlib import Path

from bench.lengths import in_process, mixed
from service.batching import PADDING_FACTOR
from service.runtime import ModelRuntime
from service.settings import Settings


def test_runs_of_similar_length_pad_less_than_one_run_per_batch(repository: Path) -> None:
    runtime = ModelRuntime(repository / "italy" / "1", Settings())
    runtime.load()
    report = in_process(runtime, mixed(256, 4, 200, features=1), batch=64, seconds=0.2)
    one, similar = report["one padded run per batch"], report["runs of similar length"]
    assert one["runs_per_batch"] == 1 and similar["runs_per_batch"] > 1
    assert similar["padded_over_real"] <= PADDING_FACTOR < one["padded_over_real"]
    assert similar["seq_s"] > 0 and one["seq_s"] > 0  # throughput: bench/lengths.py, not a test
