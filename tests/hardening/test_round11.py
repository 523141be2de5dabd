"""Hardening round 11: what round 10 found and left alone (a version replaced under a running server, two
searches in one run folder, a killed trial in a shared study, a server that trickles its answer). Each
test tries a defect the way it was found; docs/results/hardening.md (Round 11) lists them."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx

from export.importer import ImportRequest, import_graph
from service.registry import _place
from tests.export.foreign_graphs import classifier
from tests.hardening.test_round10 import save
from tests.helpers import Server

# -- gru pull --overwrite (and gru export / import --overwrite) under a running server -----------------------


def imported(folder: Path, labels: list[str]) -> Path:
    """Bundle m/1 as `gru import` writes it from a graph built with onnx.helper (2 features, 3 classes)."""
    source = save(classifier(), folder / "graph")
    request = ImportRequest(name="m", task="classification", labels=labels)
    return import_graph(source, folder / "models", request).bundle_dir


def pulled(bundle: Path, repository: Path) -> Path:
    """Place `bundle` as `gru pull --overwrite` does: downloaded into a staging folder, checked, renamed."""
    staging = [Path(tempfile.mkdtemp(dir=repository, prefix=".staging-pull-")) for _ in range(2)]
    try:
        shutil.copytree(bundle, staging[0] / "download")
        return _place(staging[0] / "download", staging[1], "models:/m/1", repository, overwrite=True)
    finally:
        for folder in staging:
            shutil.rmtree(folder, ignore_errors=True)


def test_overwriting_a_served_version_never_leaves_it_absent(tmp_path: Path) -> None:
    # before: the old folder was removed, then the new one renamed in; the folder watch polling between
    # the two unloaded the version: 300 placements under a hammering client, 264 answers of 717 were 404
    # (this test, before: 656 of 1490 answers 404)
    old, new = imported(tmp_path / "old", ["a", "b", "c"]), imported(tmp_path / "new", ["x", "y", "z"])
    repository = tmp_path / "models"
    shutil.copytree(old, repository / "m" / "1")
    server = Server(repository, GRU_POLL_INTERVAL_S="0.1").start()
    answers: list[int] = []
    done = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                answer = client.post(f"{server.url}/models/m/predict", json={"sequences": [[[0.1, 0.2]] * 5]})
                answers.append(answer.status_code)

    client = threading.Thread(target=hammer)
    client.start()
    try:
        ends = time.monotonic() + 3  # about 30 polls, 300 placements
        while time.monotonic() < ends:
            pulled(old, repository)
            pulled(new, repository)
        time.sleep(0.3)
        done.set()
        client.join()
        assert answers and set(answers) == {200}, f"{answers.count(404)} of {len(answers)} answers 404"
        deadline = time.monotonic() + 10  # the last placement (new) is loaded at the next poll
        while httpx.get(f"{server.url}/models/m").json()["output"]["labels"] != ["x", "y", "z"]:
            assert time.monotonic() < deadline, "the new bundle was never served"
            time.sleep(0.1)
        assert not [p for p in repository.iterdir() if p.name.startswith(".")]  # the old one removed
    finally:
        done.set()
        server.stop()
