"""Faults: a disk that fills up or a process killed mid-export never leaves a half-written bundle
visible; a corrupt bundle never stops start-up (it is reported), a missing repository does, in one line."""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import training.publish
from export.bundle import export_checkpoint
from service.graph_check import load_bundle
from service.repository import discover
from tests.helpers import Server


def visible_bundles(root: Path) -> list[Path]:
    return [p for p in root.glob("*/*") if not p.name.startswith(".")]


def test_disk_full_during_export_leaves_nothing_visible(italy_run, tmp_path: Path, monkeypatch) -> None:
    real, calls = training.publish.write_atomic, []

    def fill_disk_on_second_file(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(training.publish, "write_atomic", fill_disk_on_second_file)
    with pytest.raises(OSError, match="No space left"):
        export_checkpoint(italy_run.checkpoint, tmp_path / "models", "italy")
    assert visible_bundles(tmp_path / "models") == []
    assert list((tmp_path / "models" / "italy").iterdir()) == []  # the staging folder is gone too


def test_sigkill_during_export_never_shows_a_partial_bundle(italy_run, tmp_path: Path) -> None:
    root = tmp_path / "models"
    command = [sys.executable, "-m", "gru_cli", "export", "--checkpoint", str(italy_run.checkpoint),
               "--repository", str(root), "--name", "italy"]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    whole = time.monotonic() - started
    for fraction in (0.7, 0.9, 0.97):  # most of the time goes to imports; aim at the end
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * fraction)
        process.send_signal(signal.SIGKILL)
        process.wait()
        for bundle in visible_bundles(root):  # whatever is visible is whole: it loads and verifies
            load_bundle(bundle)
    assert list(discover(root)) == ["italy"]


def test_a_corrupt_bundle_at_start_up_is_reported_the_rest_serves(repository: Path, tmp_path: Path) -> None:
    import httpx

    root = tmp_path / "models"
    shutil.copytree(repository, root)
    graph = root / "italy" / "1" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: len(graph.read_bytes()) // 2])  # truncated
    (root / "italy" / "²").mkdir()  # "²".isdigit() is True, int("²") fails
    server = Server(root).start()
    try:
        assert httpx.get(f"{server.url}/models").json()["models"][0]["name"] == "airline"
        index = {(e["name"], e["version"]): e for e in httpx.get(f"{server.url}/v2/repository/index").json()}
        assert "onnx.sha256 does not match model.onnx" in index[("italy", "1")]["reason"]
        assert "not a version number" in index[("italy", "²")]["reason"]
        assert httpx.post(f"{server.url}/v2/repository/models/italy/load").status_code == 400
    finally:
        server.stop()
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("flag", ["--models", "--repository"])  # --repository: as gru export's
def test_a_missing_repository_stops_start_up_with_one_error_line(tmp_path: Path, flag: str) -> None:
    out = subprocess.run([sys.executable, "-m", "gru_cli", "serve", flag, str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    assert f"gru serve: error: model repository {tmp_path / 'nope'} is not a folder" in out.stderr


def test_model_names_cannot_traverse_paths(server) -> None:
    import httpx

    for name in ("..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "italy%2F..%2F..", "italy%00"):
        response = httpx.post(f"{server.url}/models/{name}/predict", content=b'{"sequences": [[1]]}',
                              headers={"content-type": "application/json"})
        assert response.status_code == 404, (name, response.text)
