"""MLflow against a real `mlflow server` (SQLite backend, artifacts proxied by the server) started here on
a free loopback port: `gru train --mlflow` logs params, per-epoch metrics, test metrics and the run folder's
report and plots; `gru export --register` registers the bundle as a model version of that run; `gru pull`
downloads the registered version into a repository that `gru serve` serves."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, free_port

SEQUENCE = [-0.71, -1.18, -1.35, -1.59, -1.61, -1.35, -0.43, 0.94, 1.33, 1.16, 0.90, 0.56, 0.39, 0.31, 0.37,
            0.67, 0.62, 0.47, 0.58, 1.40, 1.32, 0.67, -0.18, -0.48]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts")]
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # it migrates its database first
        while time.monotonic() < deadline:
            assert process.poll() is None, (root / "server.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow server not up in 180 s:\n{(root / 'server.log').read_text()}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def gru(*args: str, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "gru_cli", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done


def test_a_run_its_registered_bundle_and_serving_it(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    gru("train", "--mlflow", mlflow_server, "--name", "tracked", "--run-dir", str(tmp_path / "runs"),
        "--max-epochs", "3", "--no-progress", "--set", "model.hidden_size=8",
        "--set", "optim.final_fit=false", "--set", "optim.tensorboard=false")
    client = MlflowClient(mlflow_server)
    [run] = client.search_runs([client.get_experiment_by_name("gru-serve").experiment_id])
    assert (run.info.run_name, run.info.status) == ("tracked", "FINISHED")
    params = run.data.params
    assert params["model.hidden_size"] == "8" and params["data.dataset"] == "ItalyPowerDemand"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
    assert 0 <= run.data.metrics["test_accuracy"] <= 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "config.yaml", "metrics.jsonl", "learning_curves.png"} <= artifacts

    exported = gru("export", "--checkpoint", str(tmp_path / "runs" / "tracked" / "checkpoint.pt"),
                   "--repository", str(tmp_path / "models"), "--name", "italy", "--version", "4",
                   "--register", "italy-gru", MLFLOW_TRACKING_URI=mlflow_server)
    said = f"registered models:/italy-gru/1 (MLflow run {run.info.run_id}, the training run)"
    assert said in exported.stdout
    version = client.get_model_version("italy-gru", "1")
    assert version.run_id == run.info.run_id and version.tags["gru.bundle"] == "italy/4"

    pulled = tmp_path / "pulled"
    gru("pull", "italy-gru", "--repository", str(pulled), "--mlflow", mlflow_server)  # the latest version
    for name in ("model.onnx", "manifest.json"):  # the bundle, byte for byte, where its manifest says
        assert (pulled / "italy/4" / name).read_bytes() == (tmp_path / "models/italy/4" / name).read_bytes()
    server = Server(pulled).start()
    try:
        answer = httpx.post(f"{server.url}/models/italy/predict", json={"sequences": [SEQUENCE]})
        assert answer.status_code == 200 and answer.json()["version"] == 4
    finally:
        server.stop()


def test_an_ensemble_is_one_run(mlflow_server: str, tmp_path: Path) -> None:
    """optim.members: the members train quiet; the run that MLflow holds is the merged model's."""
    from mlflow import MlflowClient

    gru("train", "--mlflow", mlflow_server, "--name", "members", "--run-dir", str(tmp_path / "runs"),
        "--max-epochs", "2", "--no-progress", "--set", "model.hidden_size=8", "--set", "optim.members=2",
        "--set", "optim.tensorboard=false", "--set", "optim.plots=false")
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("gru-serve").experiment_id
    [run] = client.search_runs([experiment], filter_string="attributes.run_name = 'members'")
    assert run.info.status == "FINISHED" and run.data.params["optim.members"] == "2"
    assert 0 <= run.data.metrics["test_accuracy"] <= 1
    assert {"report.md", "metrics.jsonl"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_pull_names_what_is_missing(mlflow_server: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "gru_cli", "pull", "nothing-here", "--repository", str(tmp_path),
               "--mlflow", mlflow_server]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)  # as gru(): imports mlflow
    assert done.returncode == 2 and "no registered model 'nothing-here'" in done.stderr
