"""Hot reload under load: each repository fault replayed while clients keep sending requests;
none may fail once a loadable version exists.

    python scripts/hot_reload_under_load.py --repository models --model italy_power [--case-seconds 4]
        [--clients 8]

Copies the model's newest bundle into a scratch repository and serves it with `gru serve` (version policy
latest:1, folder watch every 0.2 s) while `--clients` threads send native and Open Inference Protocol
predict requests. The cases run in this order, each on the state the previous one left (so always all):

  startup          the server starts on version 1 (good), version 2 (corrupt) and a folder named '²'
  publish          version 3 is published the way `gru export` does (staged folder, one rename)
  corrupt-newest   a corrupt version 4 is published: 3 keeps serving
  remove-serving   the serving version 3's folder is deleted: 4 and 2 are corrupt, so 1 serves
  bad-folders      folders '²', '02', '-1', '1.0', ' 3' appear, then version 5: hot reload goes on
  non-atomic       version 6 copied file by file, the graph in two halves 1 s apart: served once complete
  outside-symlink  version 7 is a symlink to a bundle outside the repository: never served
  re-export        version 6 re-exported in place with different weights: a new runtime answers, and a
                   stream begun before it (a state token, a server-held session) is refused after it

For each case it prints the answers by status and by serving version in the window before the change and
in the window after it, the status of GET /v2/repository/index, and the version that must serve at the end.
Exits 1 on any failed request, a wrong final version, or a server that does not exit 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

POLL_S = 0.2


def publish(model_dir: Path, source: Path, version: int, corrupt: bool = False) -> Path:
    """A copy of `source` as `version`, staged and renamed into place like `gru export`."""
    staging = model_dir / f".staging-{version}"
    shutil.copytree(source, staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = version
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if corrupt:
        with open(staging / "model.onnx", "ab") as graph:
            graph.write(b"corrupt")
    os.replace(staging, model_dir / str(version))
    return model_dir / str(version)


def copy_slowly(model_dir: Path, source: Path, version: int) -> None:
    """A non-atomic copy: the manifest first, the graph in two halves with polls in between."""
    target = model_dir / str(version)
    target.mkdir()
    manifest = json.loads((source / "manifest.json").read_text()) | {"version": version}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    graph = (source / "model.onnx").read_bytes()
    with open(target / "model.onnx", "wb") as handle:
        handle.write(graph[: len(graph) // 2])
        handle.flush()
        time.sleep(1.0)  # five polls see a half-written graph
        handle.write(graph[len(graph) // 2:])


def re_export(bundle: Path) -> None:
    """The same version with different weights (every weight of the first GRU scaled by 0.9), replaced
    by one rename as `gru export --overwrite` does."""
    import onnx
    from onnx import numpy_helper

    staging = bundle.parent / f".staging-{bundle.name}-again"
    shutil.copytree(bundle, staging)
    graph = onnx.load(staging / "model.onnx")
    weight = next(t for t in graph.graph.initializer if len(t.dims) == 3)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 0.9, weight.name))
    data = graph.SerializeToString()
    (staging / "model.onnx").write_bytes(data)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    retired = bundle.parent / f".retired-{bundle.name}"
    os.replace(bundle, retired)
    os.replace(staging, bundle)
    shutil.rmtree(retired)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(repository: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GRU_MODEL_REPOSITORY": str(repository), "GRU_PORT": str(port),
           "GRU_HOST": "127.0.0.1", "GRU_POLL_INTERVAL_S": str(POLL_S), "GRU_VERSION_POLICY": "latest:1"}
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


@dataclass
class Window:
    """Answers in one window of time: by status, and by the version that served them."""

    statuses: collections.Counter = field(default_factory=collections.Counter)
    versions: collections.Counter = field(default_factory=collections.Counter)
    last_version: str = ""

    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200")

    def __str__(self) -> str:
        versions = dict(sorted(self.versions.items(), key=lambda kv: int(kv[0])))
        return f"{dict(self.statuses)} by version {versions}"


class Load:
    """Client threads sending predict requests; `window()` starts a new tally."""

    def __init__(self, url: str, model: str, shape: tuple[int, int], clients: int):
        self.url, self.model, self.shape = url, model, shape
        self.current, self.lock, self.stop = Window(), threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def window(self) -> Window:
        with self.lock:
            done, self.current = self.current, Window()
        return done

    def serving(self, version: str, timeout: float) -> None:
        """Until the answers come from `version` (at most `timeout` s): a busy machine can take longer
        than a case's seconds to load the one a change publishes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.current.last_version == version:
                    return
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _client(self, client_id: int) -> None:
        rng = np.random.default_rng(client_id)
        with httpx.Client(timeout=30) as http:
            i = 0
            while not self.stop.is_set():
                x = rng.normal(size=(2, *self.shape)).astype(np.float32)
                try:
                    outcome, version = self._request(http, x, native=i % 2 == 0)
                except httpx.HTTPError as exc:
                    outcome, version = type(exc).__name__, None
                with self.lock:
                    self.current.statuses[outcome] += 1
                    if version:
                        self.current.versions[version] += 1
                        self.current.last_version = version
                i += 1

    def _request(self, http: httpx.Client, x: np.ndarray, native: bool) -> tuple[str, str | None]:
        if native:
            response = http.post(f"{self.url}/models/{self.model}/predict", json={"sequences": x.tolist()})
            ok = response.status_code == 200
            return str(response.status_code), str(response.json()["version"]) if ok else None
        body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.ravel().tolist()}], "outputs": [{"name": "output"}]}
        response = http.post(f"{self.url}/v2/models/{self.model}/infer", json=body)
        ok = response.status_code == 200
        return str(response.status_code), response.json()["model_version"] if ok else None


class Changes:
    """What each case does to the scratch repository (one method per case)."""

    def __init__(self, model_dir: Path, source: Path, outside: Path):
        self.model_dir, self.source, self.outside = model_dir, source, outside

    def startup(self) -> None:  # prepared before the server starts
        publish(self.model_dir, self.source, 1)
        publish(self.model_dir, self.source, 2, corrupt=True)
        (self.model_dir / "²").mkdir()
        publish(self.outside, self.source, 7)

    def publish(self) -> None:
        publish(self.model_dir, self.source, 3)

    def corrupt_newest(self) -> None:
        publish(self.model_dir, self.source, 4, corrupt=True)

    def remove_serving(self) -> None:
        shutil.rmtree(self.model_dir / "3")

    def bad_folders(self) -> None:
        for name in ("²", "02", "-1", "1.0", " 3"):
            (self.model_dir / name).mkdir(exist_ok=True)
        time.sleep(3 * POLL_S)
        publish(self.model_dir, self.source, 5)

    def non_atomic(self) -> None:
        copy_slowly(self.model_dir, self.source, 6)

    def outside_symlink(self) -> None:
        (self.model_dir / "7").symlink_to(self.outside / "7")

    def re_export(self) -> None:
        re_export(self.model_dir / "6")


CASES = [  # name, the change, the version that must serve at the end
    ("startup", "start on 1 (good), 2 (corrupt), '²'", "1"),
    ("publish", "publish 3", "3"),
    ("corrupt-newest", "publish 4, corrupt", "3"),
    ("remove-serving", "delete 3 (serving); 4 and 2 are corrupt", "1"),
    ("bad-folders", "mkdir '²' '02' '-1' '1.0' ' 3', then publish 5", "5"),
    ("non-atomic", "copy 6 file by file, the graph in two halves 1 s apart", "6"),
    ("outside-symlink", "7: a symlink to a bundle outside the repository", "6"),
    ("re-export", "re-export 6 in place with different weights", "6"),
]


def probe(url: str, model: str, shape: tuple[int, int]) -> str:
    """The answer to one fixed sequence, as text."""
    x = np.linspace(1, 2, shape[0] * shape[1], dtype=np.float32).reshape(1, *shape)
    response = httpx.post(f"{url}/models/{model}/predict", json={"sequences": x.tolist()}, timeout=30)
    return json.dumps(response.json()["predictions"])


def stream_chunk(url: str, model: str, shape: tuple[int, int], **fields: object) -> httpx.Response:
    steps = np.linspace(1, 2, shape[0] * shape[1], dtype=np.float32).reshape(shape).tolist()
    return httpx.post(f"{url}/models/{model}/stream", json={"steps": steps, **fields}, timeout=30)


def streams_across(url: str, model: str, shape: tuple[int, int], change: Callable[[], None]) -> str:
    """Begin a stateless stream and a server-held one, apply `change`, continue both: what they got."""
    token = stream_chunk(url, model, shape).json()["state"]
    stream_chunk(url, model, shape, sequence_id="across", start=True).raise_for_status()
    change()
    time.sleep(10 * POLL_S)  # the watch has swapped the new runtime in
    stateless = stream_chunk(url, model, shape, state=token)
    held = stream_chunk(url, model, shape, sequence_id="across")
    return (f"stream continued across it: state token -> {stateless.status_code} "
            f"{stateless.json().get('error', {}).get('code')}, server-held -> {held.status_code} "
            f"{held.json().get('error', {}).get('code')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True, help="a model repository")
    parser.add_argument("--model", required=True)
    parser.add_argument("--case-seconds", type=float, default=4.0, help="seconds of load before and after "
                        "each change")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)

    source = max((p for p in (args.repository / args.model).iterdir() if p.name.isascii()
                  and p.name.isdigit()), key=lambda p: int(p.name))
    manifest = json.loads((source / "manifest.json").read_text())
    shape = (min(24, manifest["inputs"]["max_length"]), len(manifest["inputs"]["features"]))
    scratch = Path(tempfile.mkdtemp(prefix="gru-hot-reload-"))
    root, outside = scratch / "models", scratch / "outside"
    model_dir = root / args.model
    model_dir.mkdir(parents=True)
    outside.mkdir()
    changes = Changes(model_dir, source, outside)
    changes.startup()
    process, url = start_server(root, scratch / "server.log")
    load = Load(url, args.model, shape, args.clients)
    failures, rows, answers = [], [], {}
    try:
        for name, change, expect in CASES:
            before = load.window() if name != "startup" else None
            if name == "re-export":
                answers["before"] = probe(url, args.model, shape)
            apply = getattr(changes, name.replace("-", "_"))
            if name == "re-export" and manifest["streaming"]["supported"]:
                answers["streams"] = streams_across(url, args.model, shape, apply)
            elif name != "startup":
                apply()
            time.sleep(args.case_seconds)
            load.serving(expect, timeout=60)
            after = load.window()
            index = httpx.get(f"{url}/v2/repository/index", timeout=30)
            if name == "re-export":
                answers["after"] = probe(url, args.model, shape)
            ok = (after.failed() == 0 and (before is None or before.failed() == 0)
                  and after.last_version == expect and index.status_code == 200
                  and (name != "re-export" or answers["before"] != answers["after"])
                  and "-> 200" not in answers.get("streams", ""))
            rows.append((name, change, before, after, index.status_code, expect, ok))
            if not ok:
                failures.append(name)
            time.sleep(args.case_seconds / 2)  # the next case's "before" window
    finally:
        load.close()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    print(f"{args.clients} clients, predict (native and v2 alternately), {args.case_seconds:g} s after "
          f"each change; policy latest:1, poll {POLL_S} s\n")
    print("| case | change | before: answers by status, by version | after: answers by status, by version "
          "| index | serving at the end (expected) | ok |\n|---|---|---|---|---|---|---|")
    for name, change, before, after, index_status, expect, ok in rows:
        print(f"| {name} | {change} | {before or '(server starting)'} | {after} | {index_status} | "
              f"{after.last_version} ({expect}) | {'yes' if ok else 'NO'} |")
    if answers:
        print(f"\nre-export, one fixed sequence: {answers['before'][:60]}... before, "
              f"{answers['after'][:60]}... after; {answers.get('streams', 'the model cannot stream')}")
    log = (scratch / "server.log").read_text()
    print(f"\nserver log: {log.count('failed to load')} 'failed to load', {log.count('not a version number')}"
          f" 'not a version number' (once per folder), {log.count('outside the model repository')} "
          f"'outside the model repository', {log.count('Traceback')} tracebacks")
    print(f"server exit code after SIGTERM: {exit_code}")
    shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(f"FAILED cases: {failures}")
    return 0 if not failures and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
