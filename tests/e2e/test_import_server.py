"""Imported bundles served by a real `gru serve`: answers over the native API and v2 equal onnxruntime
on the original graphs; a binary sigmoid graph answers with both classes' names (v2: the [batch, 1]
tensor); the carried state streams over HTTP; a bundle that cannot stream says why."""

from __future__ import annotations

import httpx
import numpy as np
import onnx
import pytest

from export.importer import ImportRequest, import_graph
from export.verify import TOLERANCE
from tests.export.foreign_graphs import classifier
from tests.export.test_import import TorchClassifier, original_answers, sequences, torch_export
from tests.helpers import Server

GRAPHS = {  # name -> (graph, time-major, labels)
    "torch_gru": (lambda: torch_export(TorchClassifier(), dynamo=False), False, ["a", "b", "c", "d"]),
    "relu_bi": (lambda: classifier(candidate="Relu", lbr=0, bidirectional=True, layers=2), True,
                ["x", "y", "z"]),
    "binary": (lambda: classifier(classes=1, candidate="Relu", lbr=0), True, ["normal", "fault"]),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("imported")
    for name, (build, _, labels) in GRAPHS.items():
        onnx.save(build(), str(root / f"{name}.onnx"))
        import_graph(root / f"{name}.onnx", root / "models", ImportRequest(name=name, task="classification",
                                                                           labels=labels))
    server = Server(root / "models").start()
    yield root, server
    server.stop()


def _predict(server: Server, name: str, batch: list[np.ndarray]) -> dict:
    body = {"sequences": [s.tolist() for s in batch]}
    response = httpx.post(f"{server.url}/models/{name}/predict", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("name", list(GRAPHS))
def test_native_answers_equal_onnxruntime_on_the_original(imported, name: str) -> None:
    root, server = imported
    features = 3 if name == "torch_gru" else 2
    batch = [np.round(s, 4) for s in sequences(features, seed=7)]
    expected = original_answers(root / f"{name}.onnx", batch, time_major=GRAPHS[name][1])
    body = _predict(server, name, batch)
    got = np.array([p["probabilities"] for p in body["predictions"]])
    if name == "binary":  # P(fault) from the graph; the answer names both classes
        assert body["labels"] == ["normal", "fault"]
        expected = np.concatenate([1 - expected, expected], axis=1)
        assert all(p["label"] == ("fault" if q[1] > 0.5 else "normal")
                   for p, q in zip(body["predictions"], got, strict=True))
    assert np.abs(got - expected).max() <= TOLERANCE


def test_v2_returns_the_binary_graphs_batch_by_one_tensor(imported) -> None:
    root, server = imported
    x = np.round(sequences(2, lengths=(12, 12))[0], 4)[None]
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    response = httpx.post(f"{server.url}/v2/models/binary/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    output = next(o for o in response.json()["outputs"] if o["name"] == "output")
    assert output["shape"] == [1, 1]
    expected = original_answers(root / "binary.onnx", [x[0]], time_major=True)
    assert abs(output["data"][0] - expected[0, 0]) <= TOLERANCE


def test_the_imported_state_streams_over_http_and_a_bidirectional_graph_says_why_not(imported) -> None:
    root, server = imported
    sequence = np.round(sequences(3, lengths=(20,))[0], 4)
    state = None
    for start, end in ((0, 6), (6, 7), (7, 20)):
        response = httpx.post(f"{server.url}/models/torch_gru/stream", timeout=10,
                              json={"steps": sequence[start:end].tolist(), "state": state})
        assert response.status_code == 200, response.text
        state = response.json()["state"]
    expected = original_answers(root / "torch_gru.onnx", [sequence], time_major=False)[0]
    assert np.abs(np.array(response.json()["prediction"]["probabilities"]) - expected).max() <= TOLERANCE
    refused = httpx.post(f"{server.url}/models/relu_bi/stream", json={"steps": [[0.1, 0.2]]}, timeout=10)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "streaming_unsupported"
    assert "bidirectional" in refused.json()["error"]["message"]
