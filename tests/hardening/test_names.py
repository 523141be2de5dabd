"""A model cannot be named "stats": GET /v2/models/stats is the statistics of every model (the Open
Inference Protocol's route), so a model of that name answered with other models' statistics where its
metadata was asked for (found by a red-team pass on model names)."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.helpers import Server


def test_export_refuses_the_name_stats(tmp_path, italy_run) -> None:
    from export.bundle import export_checkpoint

    with pytest.raises(ValueError, match="model name .stats. is reserved"):
        export_checkpoint(italy_run.checkpoint, tmp_path / "models", "stats")


def test_a_stats_folder_is_ignored_and_cannot_be_loaded(tmp_path, repository) -> None:
    root = tmp_path / "models"
    shutil.copytree(repository / "italy", root / "italy")
    shutil.copytree(repository / "italy", root / "stats")
    running = Server(root).start()
    try:
        index = {e["name"]: e for e in httpx.get(f"{running.url}/v2/repository/index").json()}
        load = httpx.post(f"{running.url}/v2/repository/models/stats/load")
        stats = httpx.get(f"{running.url}/v2/models/stats").json()
    finally:
        running.stop()
    assert index["italy"]["state"] == "READY"
    assert index["stats"]["state"] == "UNAVAILABLE" and "reserved" in index["stats"]["reason"], index
    assert load.status_code == 404 and "not a valid model name" in load.json()["error"]
    assert [s["name"] for s in stats["model_stats"]] == ["italy"]
