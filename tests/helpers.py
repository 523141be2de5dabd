"""Shared test helpers: tiny real models, trained or freshly initialised, and a real server process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest


def train_tiny(run_dir: Path, name: str, *overrides: str):
    """A real training run on a real dataset with a tiny model and budget."""
    from training.config import load_config
    from training.loop import fit

    base = [f"name={name}", f"run_dir={run_dir}", "progress=false", "model.hidden_size=16",
            "model.num_layers=1", "optim.max_epochs=30", "optim.patience=10", "optim.learning_rate=0.005"]
    return fit(load_config(None, base + list(overrides)))


def exported_runtime(checkpoint: Path, models: Path, name: str):
    """Export a checkpoint as the product does (parity checked against PyTorch) and load the bundle in a
    real onnxruntime session, as the server would."""
    from export.bundle import export_checkpoint
    from service.runtime import ModelRuntime
    from service.settings import Settings

    result = export_checkpoint(checkpoint, models, name)
    assert result.manifest.parity.max_abs_diff <= 1e-5
    runtime = ModelRuntime(result.bundle_dir, Settings())
    runtime.load()
    return runtime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`gru serve` as a separate process on a free loopback port."""

    def __init__(self, repository: Path, preexec_fn: Callable[[], None] | None = None, grpc: bool = False,
                 **env: str):
        """grpc: serve gRPC too, on another free port (`grpc_url`)."""
        self.repository, self.preexec_fn, self.grpc, self.given = repository, preexec_fn, grpc, env
        self.process: subprocess.Popen | None = None
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = self.given
        if self.grpc:
            grpc_port = free_port()
            self.grpc_url = f"127.0.0.1:{grpc_port}"
            env = {"GRU_GRPC_PORT": str(grpc_port), **env}
        self.env = {**os.environ, "GRU_MODEL_REPOSITORY": str(self.repository), "GRU_PORT": str(self.port),
                    "GRU_HOST": "127.0.0.1", **env}
        self.log_path = self.repository.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 90.0, tries: int = 3) -> Server:
        """Wait for /health/ready: generously, a loaded CI machine takes many seconds to import and load.
        A port free when chosen can be taken before the server binds it (by another process, or both
        free_port calls can get one port): then again on other ports."""
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "gru_cli", "serve"], env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                chosen = not {"GRU_PORT", "GRU_GRPC_PORT"} & set(self.given)
                if chosen and tries > 1 and "cannot listen on" in self.output():
                    self.log.close()
                    self._choose_ports()
                    return self.start(timeout, tries - 1)
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server not ready within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def json_lines(self) -> list[dict]:
        """The JSON lines logged so far; the last one is left out while it is still being written."""
        complete = self.output().rpartition("\n")[0]
        return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]

    def output_with(self, text: str, timeout: float = 15.0) -> str:
        """The output once a whole line holds `text` (access lines are written in batches, up to 0.5 s
        late)."""
        deadline = time.monotonic() + timeout
        while text not in (output := self.output()).rpartition("\n")[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        return output

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode if self.process else None


def while_the_queue_is_full(server: Server, model: str, sequences: int) -> Iterator[None]:
    """Yields again and again while a heavy request (`sequences` of 256 steps) runs on `model`, for up to
    20 heavy requests in turn: a request sent meanwhile to a server with GRU_MAX_QUEUE_SIZE=1 meets a full
    queue (mostly during the first). Fails the test if none did, i.e. if the caller never stopped."""
    heavy = json.dumps({"sequences": np.full((sequences, 256, 1), 0.5).tolist()}).encode()
    with ThreadPoolExecutor(1) as pool:
        for _ in range(20):
            running = pool.submit(httpx.post, f"{server.url}/models/{model}/predict", content=heavy,
                                  headers={"content-type": "application/json"}, timeout=120)
            while not running.done():
                yield
            assert running.result().status_code == 200
    pytest.fail("no request met a full queue in 20 heavy runs")
