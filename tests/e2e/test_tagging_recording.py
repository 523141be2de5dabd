"""A tagger from one recording, end to end: a CSV of one sensor's steps, labelled at every step, without
an id or a step column -> `gru train` (split in time: the test is the recording's end) -> `gru export` ->
`gru serve` -> the whole recording in one request, and the same recording streamed in chunks: the
served labels of the held-out steps score what training reported, and the chunks answer as the whole."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from gru_cli import main
from tests.helpers import Server
from training.data.synthetic import REGIMES, regime_sequence

STEPS = 900


def _recording(path: Path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    values, labels = [], []
    while sum(map(len, labels)) < STEPS:
        x, y = regime_sequence(rng)
        values.append(x[:, 0])
        labels.append(y)
    frame = pd.DataFrame({"value": np.concatenate(values)[:STEPS],
                          "label": [REGIMES[i] for i in np.concatenate(labels)[:STEPS]]})
    frame.to_csv(path, index=False)
    return frame


def test_one_recording_trains_exports_and_serves_what_was_reported(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    frame = _recording(tmp_path / "rec.csv")
    code = main(["train", "--name", "rec", "--run-dir", str(tmp_path / "runs"), "--no-progress",
                 "--max-epochs", "5", "--set", "data.dataset=file", "--set", f"data.path={tmp_path}/rec.csv",
                 "--set", "data.task=tagging", "--set", "data.window=64", "--set", "model.hidden_size=16",
                 "--set", "optim.plots=false", "--set", "optim.tensorboard=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "the file is one series" in printed and "split: in time (1 recording(s)" in printed
    reported = json.loads((tmp_path / "runs" / "rec" / "test_metrics.json").read_text())
    assert main(["export", "--checkpoint", str(tmp_path / "runs" / "rec" / "checkpoint.pt"),
                 "--repository", str(tmp_path / "models"), "--name", "rec"]) == 0
    steps = [[v] for v in frame["value"].tolist()]
    server = Server(tmp_path / "models").start()
    try:
        whole = httpx.post(f"{server.url}/models/rec/predict", json={"sequences": [steps]}, timeout=60)
        chunks = []
        for start in range(0, STEPS, 250):
            body = {"sequence_id": "rec-1", "start": start == 0, "end": start + 250 >= STEPS,
                    "steps": steps[start : start + 250]}
            answer = httpx.post(f"{server.url}/models/rec/stream", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            chunks += answer.json()["prediction"]["steps"]
    finally:
        server.stop()
    assert whole.status_code == 200, whole.text
    served = whole.json()["predictions"][0]["steps"]
    assert chunks == served
    held = STEPS - int(np.ceil(STEPS * 0.2))  # the test: the last 20 % (data.test_fraction)
    accuracy = np.mean(np.array(served[held:]) == frame["label"].to_numpy()[held:])
    assert accuracy == pytest.approx(reported["accuracy"], abs=1e-9)
