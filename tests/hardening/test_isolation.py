"""Isolation over HTTP: an onnxruntime failure fails only its own request, never the requests batched
with it, answers 500 `inference_failed` with the request id, and leaves the service ready.

A real failure needs a bundle that passes every check and still fails in onnxruntime for some valid
input. `narrow_bundle` builds one from the real italy bundle: its graph first adds a (1, 30, F) table of
zeros, sliced to the input's length, to `x` (a fixed-size step table, like a positional table), so it
runs sequences of up to 30 steps exactly as the original model does, while its manifest still allows
max_length 256. Longer sequences pass validation and make onnxruntime's Add refuse to broadcast.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.verify import TOLERANCE
from service.bundle import sha256_of
from tests.helpers import Server

TABLE_STEPS = 30
BAD_STEPS = 40  # within the manifest's max_length, beyond the graph's table


def narrow_bundle(source: Path, target: Path, steps: int) -> None:
    """Copy a bundle as model `target.parent.name`, its graph limited to `steps` steps (see above)."""
    model = onnx.load(source / "model.onnx")
    graph = model.graph
    features = graph.input[0].type.tensor_type.shape.dim[2].dim_value
    for node in graph.node:
        node.input[:] = ["x_narrow" if name == "x" else name for name in node.input]
    graph.initializer.extend([
        numpy_helper.from_array(np.zeros((1, steps, features), np.float32), "step_table"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
    ])
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Slice", ["x_shape", "one", "two"], ["x_steps"]),  # [T]
        # (1, min(T, S), F): the table cut to the input's length
        helper.make_node("Slice", ["step_table", "zero", "x_steps", "one"], ["steps_used"]),
        helper.make_node("Add", ["x", "steps_used"], ["x_narrow"]),  # fails when T > S
    ]
    for position, node in enumerate(nodes):
        graph.node.insert(position, node)
    assert graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    onnx.checker.check_model(model)
    target.mkdir(parents=True)
    onnx.save(model, target / "model.onnx")
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["name"] = target.parent.name
    manifest["onnx"]["sha256"] = sha256_of(target / "model.onnx")
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def isolation_server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("isolation") / "models"
    shutil.copytree(repository / "italy", root / "italy")
    narrow_bundle(repository / "italy" / "1", root / "narrow" / "1", TABLE_STEPS)
    # A short wait to fill batches under load, so that concurrent requests surely share runs.
    server = Server(root, GRU_MAX_QUEUE_DELAY_MS="20").start()
    yield server
    server.stop()


def body(steps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"sequences": [rng.standard_normal((steps, 1)).round(4).tolist()]}


def test_the_narrow_bundle_is_valid_and_fails_only_past_its_table(isolation_server: Server) -> None:
    url = isolation_server.url
    metadata = httpx.get(f"{url}/models/narrow").json()
    assert metadata["inputs"]["max_length"] >= BAD_STEPS  # the long request passes validation
    good = httpx.post(f"{url}/models/narrow/predict", json=body(24, 1))
    same = httpx.post(f"{url}/models/italy/predict", json=body(24, 1))
    assert good.status_code == 200 and good.json()["predictions"] == same.json()["predictions"]
    bad = httpx.post(f"{url}/models/narrow/predict", json=body(BAD_STEPS, 2),
                     headers={"X-Request-ID": "bad-request-1"})
    assert bad.status_code == 500, bad.text
    error = bad.json()["error"]
    assert error["code"] == "inference_failed" and "onnxruntime failed" in error["message"]
    assert error["request_id"] == bad.headers["x-request-id"] == "bad-request-1"
    assert httpx.get(f"{url}/health/ready").status_code == 200


async def _round(url: str, goods: list[dict], bad: dict) -> tuple[list[httpx.Response], httpx.Response]:
    limits = httpx.Limits(max_connections=len(goods) + 1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        half = len(goods) // 2
        calls = [client.post("/models/narrow/predict", json=b) for b in goods[:half]]
        calls.append(client.post("/models/narrow/predict", json=bad, headers={"X-Request-ID": "the-bad-one"}))
        calls += [client.post("/models/narrow/predict", json=b) for b in goods[half:]]
        responses = await asyncio.gather(*calls)
    return responses[:half] + responses[half + 1:], responses[half]


def test_a_failing_request_fails_alone_in_a_shared_batch(isolation_server: Server) -> None:
    url = isolation_server.url
    goods = [body(int(steps), seed) for seed, steps in
             enumerate(np.random.default_rng(0).integers(1, TABLE_STEPS + 1, 40))]
    expected = [httpx.post(f"{url}/models/italy/predict", json=b).json()["predictions"] for b in goods]
    shared = False
    for attempt in range(5):  # until the server log shows the bad request ran in a batch with others
        answers, bad = asyncio.run(_round(url, goods, body(BAD_STEPS, 100 + attempt)))
        assert [r.status_code for r in answers] == [200] * len(goods)
        for got, alone in zip([r.json()["predictions"] for r in answers], expected, strict=True):
            assert [p["label"] for p in got] == [p["label"] for p in alone]  # each as alone: to rounding
            assert np.abs(np.array([p["probabilities"] for p in got]) -
                          [p["probabilities"] for p in alone]).max() <= TOLERANCE
        assert bad.status_code == 500
        assert bad.json()["error"]["code"] == "inference_failed"
        assert bad.json()["error"]["request_id"] == "the-bad-one"
        assert httpx.get(f"{url}/health/ready").status_code == 200
        if "retrying them one by one" in isolation_server.output():
            shared = True
            break
    assert shared, "the bad request never shared a batch:\n" + isolation_server.output()[-2000:]
    after = httpx.post(f"{url}/models/narrow/predict", json=goods[0])
    assert after.status_code == 200 and after.json()["predictions"] == expected[0]
