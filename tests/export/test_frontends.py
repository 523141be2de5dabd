"""Every front end through export and the served runtime: ONNX parity with PyTorch (export verifies it at
other batch sizes and lengths than traced, ragged included), the manifest's state parts, a padded batch
equal to each sequence alone, and a stream in chunks not aligned to the stride equal to the whole prefix
(ModelRuntime.step: what the native stream and v2 sequences run)."""

from __future__ import annotations

import numpy as np
import pytest

from export.verify import TOLERANCE
from service.batching import compute_now
from service.runtime import ModelRuntime
from tests.helpers import exported_runtime, train_tiny

CASES = {  # front end, stride -> the state parts the manifest must name, in order
    ("conv", 4): ["gru_h", "patch_steps", "patch_count", "conv_patch", "conv_out", "pool_mean", "pool_max",
                  "pool_count"],
    ("patch", 3): ["gru_h", "patch_steps", "patch_count", "pool_mean", "pool_max", "pool_count"],
    ("none", 1): ["gru_h", "pool_mean", "pool_max", "pool_count"],
}


@pytest.fixture(scope="module", params=list(CASES), ids=lambda case: f"{case[0]}-{case[1]}")
def served(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[str, int], ModelRuntime]:
    frontend, stride = request.param
    root = tmp_path_factory.mktemp(frontend)
    run = train_tiny(root / "runs", frontend, f"model.frontend={frontend}", f"model.patch={stride}",
                     "optim.max_epochs=2")
    return request.param, exported_runtime(run.checkpoint, root / "models", frontend)


def test_the_manifest_names_the_front_ends_state_and_it_streams(served) -> None:
    case, runtime = served
    assert [p.name for p in runtime.manifest.state.parts] == CASES[case]
    assert runtime.manifest.streaming_refusal is None


def test_a_padded_batch_answers_each_sequence_as_alone(served) -> None:
    _, runtime = served
    rng = np.random.default_rng(1)
    sequences = [rng.normal(size=(n, 1)).astype(np.float32) for n in (24, 1, 7, 13, 3)]
    together = compute_now(runtime, sequences).outputs
    for i, seq in enumerate(sequences):
        assert np.abs(together[i] - runtime.predict(seq[None])[0]).max() <= TOLERANCE


@pytest.mark.parametrize("cuts", [[1, 1, 1, 1, 1, 1, 1], [2, 5, 1, 9, 3], [3, 3, 6, 11], [23, 1]])
def test_chunks_of_any_size_answer_as_the_whole_prefix(served, cuts: list[int]) -> None:
    _, runtime = served
    sequence = np.random.default_rng(sum(cuts)).normal(size=(sum(cuts), 1)).astype(np.float32)
    state, seen = None, 0
    for size in cuts:
        result = compute_now(runtime, [sequence[seen : seen + size]], None if state is None else state[None])
        output, state = result.outputs[0], result.states[0]
        seen += size
        whole = runtime.predict(sequence[None, :seen])[0]
        assert np.abs(output - whole).max() <= TOLERANCE, (cuts, seen)


def test_the_carried_parts_follow_the_stride(served) -> None:
    """The unfinished patch holds up to stride - 1 steps; the conv's context one whole patch (stride
    steps) and its first layer's last two outputs."""
    (frontend, stride), runtime = served
    parts = {p.name: p.shape for p in runtime.manifest.state.parts}
    if frontend == "none":
        assert not {"patch_steps", "conv_patch", "conv_out"} & set(parts)
        return
    assert parts["patch_steps"] == [stride - 1, 1] and parts["patch_count"] == [1]
    if frontend == "conv":
        assert parts["conv_patch"] == [stride, 1] and parts["conv_out"] == [2, 16]
