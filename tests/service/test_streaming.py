"""Streaming pieces in-process with real onnxruntime sessions: chunked answers equal whole-prefix
answers, state tokens refuse tampering and other models, sessions evict and expire. (Chunks of
different sequences batched together: tests/service/test_batching.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.verify import TOLERANCE
from service.batching import compute_now
from service.codecs.native import StateCodec, StateTokenError
from service.runtime import ModelRuntime
from service.sessions import SequenceGone, SessionStore
from service.settings import Settings


@pytest.fixture(scope="module")
def runtimes(ragged_repository: Path) -> dict[str, ModelRuntime]:
    loaded = {}
    for name in ("vowels_uni", "regimes", "vowels_bi", "airline"):
        loaded[name] = ModelRuntime(ragged_repository / name / "1", Settings())
        loaded[name].load()
    return loaded


def _chunks(sequence: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(sequence)}), len(sequence)]
    return [sequence[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 60), cuts=st.lists(st.integers(1, 59), max_size=8),
       name=st.sampled_from(["vowels_uni", "regimes"]), seed=st.integers(0, 2**16))
def test_random_chunkings_give_the_whole_prefix_answers(runtimes, length, cuts, name, seed) -> None:
    runtime = runtimes[name]
    sequence = np.random.default_rng(seed).normal(size=(length, runtime.manifest.inputs.num_features))
    sequence = sequence.astype(np.float32)
    state, seen = None, 0
    for chunk in _chunks(sequence, cuts):
        result = compute_now(runtime, [chunk], None if state is None else state[None])
        output, state = result.outputs[0], result.states[0]
        seen += len(chunk)
        whole = runtime.predict(sequence[None, :seen])[0]
        expected = whole[seen - len(chunk) : seen] if name == "regimes" else whole
        assert np.abs(output - expected).max() <= TOLERANCE


def test_state_tokens_round_trip_and_refuse_tampering_and_other_models() -> None:
    codec = StateCodec(b"k" * 32)
    state = np.arange(6, dtype=np.float32)
    token = codec.encode("m", 3, "sha-a", state, steps=7)
    got, steps = codec.decode(token, "m", 3, "sha-a", 6)
    np.testing.assert_array_equal(got, state)
    assert steps == 7
    prefix, payload, mac = token.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad, message in [
        (f"{prefix}.{flipped}.{mac}", "signature"),
        (token[:-3] + "xyz", "signature"),
        (StateCodec(b"q" * 32).encode("m", 3, "sha-a", state, 7), "signature"),  # another server's secret
        (codec.encode("other", 3, "sha-a", state, 7), "belongs to model 'other'"),
        (codec.encode("m", 2, "sha-a", state, 7), "version 2"),
        (codec.encode("m", 3, "sha-b", state, 7), "re-exported"),  # same version, other weights
        (codec.encode("m", 3, "sha-a", state[:4], 7), "holds 4 state values"),
        ("hello", "not a state token"),
    ]:
        with pytest.raises(StateTokenError, match=message):
            codec.decode(bad, "m", 3, "sha-a", 6)


def test_sessions_evict_the_least_recently_used_and_say_so() -> None:
    store = SessionStore(max_sessions=2, idle_seconds=60)
    store.start(("m", "a"), 1, "g")
    store.start(("m", "b"), 1, "g")
    store.get(("m", "a"))  # a is now more recent than b
    store.start(("m", "c"), 1, "g")  # over the cap: b goes
    assert len(store) == 2
    with pytest.raises(SequenceGone, match="evicted.*GRU_MAX_SESSIONS") as gone:
        store.get(("m", "b"))
    assert gone.value.reason == "evicted"
    store.get(("m", "a"))
    store.end(("m", "a"))
    with pytest.raises(SequenceGone, match="has ended"):
        store.get(("m", "a"))
    with pytest.raises(SequenceGone, match="not open"):
        store.get(("m", "never"))


def test_idle_sessions_expire() -> None:
    now = [0.0]
    store = SessionStore(max_sessions=10, idle_seconds=5, clock=lambda: now[0])
    store.start(("m", "a"), 1, "g")
    store.start(("m", "b"), 1, "g")
    now[0] = 4.0
    store.get(("m", "b"))
    now[0] = 6.0  # a idle for 6 s, b for 2 s
    with pytest.raises(SequenceGone, match="expired after 5 s") as gone:
        store.get(("m", "a"))
    assert gone.value.reason == "expired" and store.get(("m", "b"))


def test_which_models_may_stream(runtimes) -> None:
    assert runtimes["vowels_uni"].manifest.streaming_refusal is None
    assert runtimes["regimes"].manifest.streaming_refusal is None
    assert "bidirectional" in (runtimes["vowels_bi"].manifest.streaming_refusal or "")
    assert "whole window" in (runtimes["airline"].manifest.streaming_refusal or "")


def test_live_sessions_feed_the_streaming_sessions_gauge() -> None:
    from prometheus_client import REGISTRY

    def live(model: str) -> float | None:
        return REGISTRY.get_sample_value("gru_streaming_sessions", {"model": model})

    now = [0.0]
    store = SessionStore(max_sessions=2, idle_seconds=10, clock=lambda: now[0])
    store.start(("gauge-model", "a"), 1, "g")
    store.start(("gauge-model", "b"), 1, "g")
    store.start(("gauge-model", "a"), 1, "g")  # a restart is still one session
    assert live("gauge-model") == 2
    store.start(("gauge-model", "c"), 1, "g")  # evicts the least recently used
    assert live("gauge-model") == 2
    store.end(("gauge-model", "c"))
    now[0] = 60.0
    store.sweep()  # the rest expire
    assert live("gauge-model") == 0
