"""Hot reload under load: requests keep flowing while new versions of a model are published into the
repository, and none may fail.

    python scripts/hot_reload_under_load.py --repository models --model italy_power --duration 20

Copies the model's newest bundle into a scratch repository, serves it with `gru serve` (folder watch every
0.2 s), and runs `--clients` threads of Open Inference Protocol and native requests for `--duration`
seconds. Every `--publish-every` seconds it publishes the next version the way `gru export` does (staged
folder, one rename); once, it also publishes a corrupt bundle, which must be refused while the serving
version keeps answering. Prints the answers by status and by the version that served them; exits 1 on any
failed request or if no new version was ever served.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np


def publish(model_dir: Path, source: Path, version: int, corrupt: bool = False) -> None:
    staging = model_dir / f".staging-{version}"
    shutil.copytree(source, staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = version
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if corrupt:
        with open(staging / "model.onnx", "ab") as graph:
            graph.write(b"corrupt")
    os.replace(staging, model_dir / str(version))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(repository: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GRU_MODEL_REPOSITORY": str(repository), "GRU_PORT": str(port),
           "GRU_HOST": "127.0.0.1", "GRU_POLL_INTERVAL_S": "0.2"}
    process = subprocess.Popen([sys.executable, "-m", "gru_cli", "serve"], env=env,
                               stdout=open(log_path, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise TimeoutError("server not ready in 60 s")


def load(url: str, model: str, shape: tuple[int, int], stop: threading.Event, tally: collections.Counter,
         versions: collections.Counter, lock: threading.Lock, client_id: int) -> None:
    rng = np.random.default_rng(client_id)
    with httpx.Client(timeout=30) as http:
        i = 0
        while not stop.is_set():
            x = rng.normal(size=(2, *shape)).astype(np.float32)
            try:
                if i % 2:
                    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.ravel().tolist()}], "outputs": [{"name": "output"}]}
                    response = http.post(f"{url}/v2/models/{model}/infer", json=body)
                    version = response.json().get("model_version") if response.status_code == 200 else None
                else:
                    response = http.post(f"{url}/models/{model}/predict", json={"sequences": x.tolist()})
                    version = str(response.json().get("version")) if response.status_code == 200 else None
                outcome = str(response.status_code)
            except httpx.HTTPError as exc:
                outcome, version = type(exc).__name__, None
            with lock:
                tally[outcome] += 1
                if version:
                    versions[version] += 1
            i += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True, help="a model repository")
    parser.add_argument("--model", required=True)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--publish-every", type=float, default=2.0, help="seconds between new versions")
    args = parser.parse_args(argv)

    source = max((p for p in (args.repository / args.model).iterdir() if p.name.isdigit()),
                 key=lambda p: int(p.name))
    manifest = json.loads((source / "manifest.json").read_text())
    shape = (min(24, manifest["inputs"]["max_length"]), len(manifest["inputs"]["features"]))
    scratch = Path(tempfile.mkdtemp(prefix="gru-hot-reload-"))
    model_dir = scratch / "models" / args.model
    model_dir.mkdir(parents=True)
    publish(model_dir, source, 1)
    process, url = start_server(scratch / "models", scratch / "server.log")
    tally: collections.Counter = collections.Counter()
    versions: collections.Counter = collections.Counter()
    lock, stop = threading.Lock(), threading.Event()
    threads = [threading.Thread(target=load, args=(url, args.model, shape, stop, tally, versions, lock, i))
               for i in range(args.clients)]
    published: list[str] = []
    try:
        for thread in threads:
            thread.start()
        started, version, corrupt_done = time.monotonic(), 1, False
        while time.monotonic() - started < args.duration:
            time.sleep(args.publish_every)
            version += 1
            corrupt = not corrupt_done and version == 3
            publish(model_dir, source, version, corrupt=corrupt)
            corrupt_done |= corrupt
            published.append(f"{version}{' (corrupt)' if corrupt else ''}")
        time.sleep(1.0)  # the last version gets picked up under load too
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    log = (scratch / "server.log").read_text().splitlines()
    refused = [json.loads(line)["message"] for line in log
               if line.startswith("{") and "failed to load" in line]
    failed = sum(n for outcome, n in tally.items() if outcome != "200")
    print(f"published versions: {', '.join(published)}")
    print(f"requests: {sum(tally.values())}  by status: {dict(tally)}  failed: {failed}")
    print(f"answers by serving version: {dict(sorted(versions.items(), key=lambda kv: int(kv[0])))}")
    print(f"refused bundles (from the server log): {refused[:1]}")
    print(f"server exit code after SIGTERM: {exit_code}")
    shutil.rmtree(scratch, ignore_errors=True)
    new_versions_served = len(versions) > 1
    return 0 if failed == 0 and new_versions_served and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
