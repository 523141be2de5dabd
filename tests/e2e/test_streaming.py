"""End to end against a real `gru serve`: ragged requests and tagging over /predict, stateless and
server-held streaming over /stream, and the errors a client can hit."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from export.verify import TOLERANCE


def _post(server, name: str, route: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/models/{name}/{route}", json=body, timeout=10)


def _sequence(length: int, features: int, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(length, features)).round(4).tolist()


def _whole(server, name: str, steps: list) -> dict:
    response = _post(server, name, "predict", {"sequences": [steps]})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


@pytest.mark.parametrize("name", ["vowels_uni", "vowels_bi"])
def test_a_request_mixing_lengths_answers_each_as_alone(stream_server, name: str) -> None:
    sequences = [_sequence(n, 12, seed=n) for n in (29, 7, 15, 1)]
    together = _post(stream_server, name, "predict", {"sequences": sequences}).json()["predictions"]
    for seq, got in zip(sequences, together, strict=True):
        alone = _whole(stream_server, name, seq)
        assert np.abs(np.array(got["probabilities"]) - alone["probabilities"]).max() <= TOLERANCE


def test_tagging_answers_per_step_labels_and_probabilities(stream_server) -> None:
    sequences = [_sequence(n, 1, seed=n) for n in (40, 12)]
    body = _post(stream_server, "regimes", "predict", {"sequences": sequences}).json()
    assert body["labels"] == ["idle", "oscillating", "high"]
    for seq, got in zip(sequences, body["predictions"], strict=True):
        probs = np.array(got["probabilities"])
        assert probs.shape == (len(seq), 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
        assert got["steps"] == [body["labels"][k] for k in probs.argmax(axis=1)]
        alone = _whole(stream_server, "regimes", seq)
        assert np.abs(probs - alone["probabilities"]).max() <= TOLERANCE


@pytest.mark.parametrize("name", ["vowels_uni", "regimes"])
def test_stateless_stream_answers_each_prefix(stream_server, name: str) -> None:
    features = 12 if name == "vowels_uni" else 1
    sequence = _sequence(30, features, seed=3)
    state, seen = None, 0
    for size in (5, 1, 13, 11):
        answer = _post(stream_server, name, "stream", {"steps": sequence[seen : seen + size], "state": state})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += size
        whole = _whole(stream_server, name, sequence[:seen])
        assert body["steps_seen"] == seen
        expected = np.array(whole["probabilities"])
        if name == "regimes":
            expected = expected[seen - size : seen]  # a tagging chunk answers for its own steps
        assert np.abs(np.array(body["prediction"]["probabilities"]) - expected).max() <= TOLERANCE
        state = body["state"]


def test_v2_sequence_chunks_not_aligned_to_the_stride_answer_each_prefix(stream_server) -> None:
    """vowels_uni reads 3 steps per GRU step through the conv front end: chunks of 1, 2, 4 and 5 steps
    (shorter than the stride, and split mid-patch) held by the server as a v2 sequence answer as the
    whole prefix does."""
    sequence = np.array(_sequence(12, 12, seed=5), np.float32)
    seen = 0
    for i, size in enumerate((1, 2, 4, 5)):
        chunk = sequence[seen : seen + size]
        body = {"inputs": [{"name": "x", "shape": [1, size, 12], "datatype": "FP32",
                            "data": chunk.ravel().tolist()}],
                "parameters": {"sequence_id": 4242, "sequence_start": i == 0, "sequence_end": i == 3}}
        response = httpx.post(f"{stream_server.url}/v2/models/vowels_uni/infer", json=body, timeout=10)
        assert response.status_code == 200, response.text
        seen += size
        whole = _whole(stream_server, "vowels_uni", sequence[:seen].tolist())["probabilities"]
        got = np.array(response.json()["outputs"][0]["data"])
        assert np.abs(got - whole).max() <= TOLERANCE


def test_tampered_or_foreign_state_tokens_are_refused(stream_server) -> None:
    first = _post(stream_server, "vowels_uni", "stream", {"steps": _sequence(4, 12)}).json()
    token = first["state"]
    prefix, payload, mac = token.split(".")
    tampered = f"{prefix}.{payload[:10]}{'A' if payload[10] != 'A' else 'B'}{payload[11:]}.{mac}"
    bad = _post(stream_server, "vowels_uni", "stream", {"steps": _sequence(2, 12), "state": tampered})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_state"
    assert bad.json()["error"]["field"] == "state" and "signature" in bad.json()["error"]["message"]
    regimes = _post(stream_server, "regimes", "stream", {"steps": [[0.1]]}).json()["state"]
    foreign = _post(stream_server, "vowels_uni", "stream", {"steps": _sequence(2, 12), "state": regimes})
    assert foreign.status_code == 422 and "belongs to model 'regimes'" in foreign.json()["error"]["message"]


@pytest.mark.parametrize("name, reason", [("vowels_bi", "bidirectional"), ("airline", "whole window")])
def test_models_that_cannot_stream_refuse_with_the_reason(stream_server, name: str, reason: str) -> None:
    response = _post(stream_server, name, "stream", {"steps": [[1.0] * (12 if name == "vowels_bi" else 1)]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "streaming_unsupported" and reason in error["message"]
    meta = httpx.get(f"{stream_server.url}/models/{name}").json()
    assert meta["streaming"]["supported"] is False


def test_server_held_sequence_start_continue_end(stream_server) -> None:
    sequence = _sequence(20, 12, seed=5)
    chunks = [(0, 8, True, False), (8, 9, False, False), (9, 20, False, True)]
    for a, b, start, end in chunks:
        body = {"sequence_id": "held-1", "steps": sequence[a:b], "start": start, "end": end}
        answer = _post(stream_server, "vowels_uni", "stream", body).json()
        assert answer["steps_seen"] == b and answer["ended"] is end and "state" not in answer
        whole = _whole(stream_server, "vowels_uni", sequence[:b])
        got = np.array(answer["prediction"]["probabilities"])
        assert np.abs(got - whole["probabilities"]).max() <= TOLERANCE
    after = _post(stream_server, "vowels_uni", "stream", {"sequence_id": "held-1", "steps": sequence[:1]})
    assert after.status_code == 410 and after.json()["error"]["code"] == "sequence_ended"
    never = _post(stream_server, "vowels_uni", "stream", {"sequence_id": "nope", "steps": sequence[:1]})
    assert never.status_code == 404 and "start" in never.json()["error"]["message"]


def test_evicted_sequence_gets_a_clear_error(stream_server) -> None:
    steps = _sequence(3, 12)
    for sid in ("ev-a", "ev-b", "ev-c"):  # GRU_MAX_SESSIONS=2: ev-a is evicted by ev-c
        assert _post(stream_server, "vowels_uni", "stream", {"sequence_id": sid, "steps": steps,
                                                             "start": True}).status_code == 200
    gone = _post(stream_server, "vowels_uni", "stream", {"sequence_id": "ev-a", "steps": steps})
    assert gone.status_code == 410
    error = gone.json()["error"]
    assert error["code"] == "sequence_evicted" and error["field"] == "sequence_id"
    assert "GRU_MAX_SESSIONS" in error["message"]
    still = _post(stream_server, "vowels_uni", "stream", {"sequence_id": "ev-c", "steps": steps})
    assert still.status_code == 200


def test_idle_sequence_expires(stream_server) -> None:
    steps = _sequence(3, 12)
    _post(stream_server, "vowels_uni", "stream", {"sequence_id": "idle-1", "steps": steps, "start": True})
    time.sleep(4.5)  # GRU_SESSION_IDLE_SECONDS=4 (tests/conftest.py)
    late = _post(stream_server, "vowels_uni", "stream", {"sequence_id": "idle-1", "steps": steps})
    assert late.status_code == 410 and late.json()["error"]["code"] == "sequence_expired"


@pytest.mark.parametrize("body, field", [
    ({"steps": [[0.1] * 12], "state": "x", "sequence_id": "s"}, "state"),
    ({"steps": [[0.1] * 12], "start": True}, "start"),
    ({"steps": [[0.1] * 3]}, "steps"),
    ({"state": None}, "steps"),
    ({"steps": [[0.1] * 12], "sequence_id": "s", "start": "yes"}, "start"),
])
def test_bad_stream_bodies_name_the_field(stream_server, body: dict, field: str) -> None:
    response = _post(stream_server, "vowels_uni", "stream", body)
    assert response.status_code == 422 and response.json()["error"]["field"] == field, response.text
