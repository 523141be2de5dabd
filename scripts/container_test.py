"""Build the CPU serving image with podman, run it on a real model repository and check it end to end.

    .venv/bin/python scripts/container_test.py [--repository models] [--base IMAGE] [--keep-image]

Steps: build (or reuse) a local Debian base, build the `serve` target, train and export two tiny models on
the host (unless --repository is given), run the image with the repository mounted read-only at /models,
time start -> ready, send real predictions and compare them with onnxruntime in this process (and the
gRPC port's answers with REST's), check the server runs as a non-root user with no torch or training code
in the image, then clean up (container and image; the base image stays cached for the next run). Prints
the image size and start-to-ready time against the targets. Without podman it says so and exits 0.

Podman flags are the ones that work on a rootful machine without a Docker engine or systemd (vfs storage,
chroot isolation, runc, cgroupfs, host network); `docs`: docs/guides/deployment.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LOCAL_BASE = "localhost/debian-python:bookworm"
PODMAN = ["podman", "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
TARGET_SIZE_MB = 350.0
TARGET_READY_S = 3.0
TOLERANCE = 1e-5


def sh(*args: str, check: bool = True, capture: bool = True, timeout: float = 900) -> str:
    result = subprocess.run(args, text=True, capture_output=capture, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return (result.stdout or "").strip()


def podman(*args: str, **kwargs: Any) -> str:
    return sh(*PODMAN, *args, **kwargs)


def ensure_base(base: str) -> None:
    if _exists(base):
        print(f"base image {base}: cached")
        return
    if base != LOCAL_BASE:
        print(f"base image {base}: not local, podman will pull it")
        return
    if shutil.which("debootstrap") is None:
        raise SystemExit(f"base image {base} is missing and debootstrap is not installed: apt-get install "
                         "debootstrap, or pass --base python:3.11-slim where that image can be pulled")
    started = time.perf_counter()
    sh("bash", str(ROOT / "scripts" / "build_local_base.sh"), base, capture=False)
    print(f"base image {base}: built with debootstrap in {time.perf_counter() - started:.0f} s")


def _exists(image: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", image]).returncode == 0


def build_image(base: str, tag: str) -> float:
    """The default target (serve). --layers=false: one layer per stage and no intermediate images left."""
    certs = ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"] if Path("/etc/ssl/certs").is_dir() else []
    started = time.perf_counter()
    podman("build", "--isolation", "chroot", "--format", "docker", "--layers=false", *certs,
           "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(ROOT), capture=False)
    return time.perf_counter() - started


def make_repository(workdir: Path) -> Path:
    """Two tiny real models (classification and forecast), trained and exported with the host's venv."""
    repo = workdir / "models"
    gru = [sys.executable, "-m", "gru_cli"]
    tiny = ["--set", "model.hidden_size=16", "--set", "model.num_layers=1", "--no-progress"]
    for name, dataset, epochs in (("italy", "ItalyPowerDemand", 8), ("airline", "Airline", 8)):
        sh(*gru, "train", "--dataset", dataset, "--name", name, "--run-dir", str(workdir / "runs"),
           "--max-epochs", str(epochs), *tiny)
        sh(*gru, "export", "--checkpoint", str(workdir / "runs" / name / "checkpoint.pt"),
           "--repository", str(repo), "--name", name, "--version", "1")
    return repo


def readable_by_all(path: Path) -> None:
    """The container's user (uid 10001) reads the mounted repository: open it up along the way."""
    for folder, _, files in os.walk(path):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)
    for parent in path.parents:
        if parent == Path(tempfile.gettempdir()):
            break
        os.chmod(parent, 0o755)


def http(url: str, body: dict[str, Any] | None = None, timeout: float = 5) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_ready(url: str, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if http(f"{url}/health/ready", timeout=1)[0] == 200:
                return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"not ready within {timeout} s")


def compare_predictions(url: str, repo: Path) -> float:
    """Real requests against onnxruntime run here on the same graph and the same inputs."""
    import onnxruntime as ort

    from service.bundle import Manifest

    rng = np.random.default_rng(0)
    worst = 0.0
    for manifest_path in sorted(repo.glob("*/*/manifest.json")):
        manifest = Manifest.model_validate_json(manifest_path.read_text())
        name, features = manifest.name, manifest.inputs.num_features
        session = ort.InferenceSession(str(manifest_path.parent / manifest.onnx.file),
                                       providers=["CPUExecutionProvider"])
        length = manifest.training.max_train_length
        shorter = max(manifest.inputs.min_length, length // 2)  # a forecaster reads whole windows
        for batch, steps in ((1, length), (7, length), (3, shorter), (2, length * 2)):
            x = rng.normal(size=(batch, steps, features)).astype(np.float32)
            status, answer = http(f"{url}/models/{name}/predict", {"sequences": x.tolist()})
            if status != 200:
                raise AssertionError(f"{name}: HTTP {status}: {answer}")
            key = "probabilities" if "probabilities" in answer["predictions"][0] else "forecast"
            served = np.array([p[key] for p in answer["predictions"]], dtype=np.float64)
            feeds = {"x": x, "state": np.zeros((batch, manifest.state.size), dtype=np.float32),
                     "lengths": np.full(batch, steps, np.int32)}  # every step of these sequences is valid
            expected = session.run(None, feeds)[0].astype(np.float64)
            # Forecasts are in original units (hundreds of passengers): the tolerance scales with them.
            diff = float(np.max(np.abs(served - expected)))
            scaled = diff / max(1.0, float(np.max(np.abs(expected))))
            worst = max(worst, scaled)
            print(f"  {name:8s} batch {batch} x {steps:3d} steps: {key:13s} max abs diff {diff:.2e} "
                  f"(relative to the output's size {scaled:.2e})")
            if scaled > TOLERANCE:
                raise AssertionError(f"{name}: container and in-process onnxruntime differ by {diff:.2e}")
    return worst


def compare_grpc(url: str, grpc_port: int, repo: Path) -> float:
    """The image's gRPC port (GRU_GRPC_PORT, tritonclient.grpc) answers as its REST predict does."""
    import tritonclient.grpc as triton

    worst = 0.0
    with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        for manifest_path in sorted(repo.glob("*/*/manifest.json")):
            name = manifest_path.parent.parent.name
            inputs = json.loads(manifest_path.read_text())["inputs"]
            steps = max(20, inputs["min_length"])  # a forecaster reads whole windows
            x = np.random.default_rng(1).normal(size=(3, steps, len(inputs["features"]))).astype(np.float32)
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            served = client.infer(name, [tensor]).as_numpy("output").astype(np.float64)
            status, answer = http(f"{url}/models/{name}/predict", {"sequences": x.tolist()})
            key = "probabilities" if "probabilities" in answer["predictions"][0] else "forecast"
            expected = np.array([p[key] for p in answer["predictions"]], dtype=np.float64)
            worst = max(worst, float(np.max(np.abs(served - expected))))
    print(f"  gRPC ModelInfer (port {grpc_port}) vs REST predict: max diff {worst:.2e}")
    if worst > TOLERANCE:
        raise AssertionError(f"gRPC and REST answers differ by {worst:.2e}")
    return worst


def server_uid(container: str) -> tuple[list[int], str]:
    """Real, effective, saved and fs uid of PID 1 (the server) inside the container, and its command."""
    status = podman("exec", container, "cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    cmdline = podman("exec", container, "cat", "/proc/1/cmdline").replace("\0", " ").strip()
    return [int(u) for u in uids], cmdline


def image_checks(container: str) -> None:
    """No torch, no training or export code in the serving image; the healthcheck is part of the image."""
    probe = ("import importlib.util as u; "
             "print([m for m in ('torch', 'training', 'export') if u.find_spec(m)])")
    found = podman("exec", container, "python3", "-c", probe)
    if found != "[]":
        raise AssertionError(f"serving image holds {found}")
    print("  image holds no torch / training / export: ok")
    # Up to 3 tries, as the HEALTHCHECK's --retries=3: one try has 3 s to start python3, which a busy
    # machine can miss.
    for _ in range(3):
        health = subprocess.run([*PODMAN, "healthcheck", "run", container], capture_output=True, text=True)
        if health.returncode == 0:
            break
    else:
        raise AssertionError(f"HEALTHCHECK failed 3 times: {health.stdout}{health.stderr}")
    print("  HEALTHCHECK (GET /health/ready inside the container): healthy")


def installed_as_locked(container: str) -> None:
    """The image holds exactly the lock's packages at the lock's versions (requirements/serve.txt), and
    the project: a rebuild gets the same set."""
    probe = ("import importlib.metadata as m; "
             "print('\\n'.join(sorted(f'{d.name.lower()}=={d.version}' for d in m.distributions())))")
    found = set(podman("exec", container, "python3", "-c", probe).splitlines())
    lock = (ROOT / "requirements" / "serve.txt").read_text()
    pinned = {line.split(" ")[0].lower().replace("_", "-") for line in lock.splitlines() if "==" in line}
    found = {name.replace("_", "-") for name in found if not name.startswith("gru-serve==")}
    if found != pinned:
        raise AssertionError(f"image and lock differ: only in the image {sorted(found - pinned)}, "
                             f"only in the lock {sorted(pinned - found)}")
    print(f"  installed packages = requirements/serve.txt ({len(pinned)} pins): ok")



def log_checks(container: str) -> None:
    """Every line the server logged (stdout and stderr) is one JSON object, the first one included."""
    logged = subprocess.run([*PODMAN, "logs", container], capture_output=True, text=True)
    lines = logged.stdout.splitlines() + logged.stderr.splitlines()
    for line in lines:
        try:
            assert isinstance(json.loads(line), dict)
        except (ValueError, AssertionError):
            raise AssertionError(f"a log line is not a JSON object: {line[:200]!r}") from None
    print(f"  {len(lines)} log lines, each one JSON object: ok")


def bad_request(url: str, name: str) -> None:
    status, answer = http(f"{url}/models/{name}/predict", {"sequences": [["not", "numbers"]]})
    if status != 422 or answer["error"]["code"] != "invalid_input":
        raise AssertionError(f"bad input got {status}: {answer}")
    print(f"  bad input -> {status} {answer['error']['code']} ({answer['error']['field']}): ok")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: argparse.Namespace, cleanup: list[list[str]], workdir: Path) -> int:
    tag = f"localhost/gru-serve:ctest-{os.getpid()}"
    container = f"gru-ctest-{os.getpid()}"
    ensure_base(args.base)

    print(f"\n== build {tag} (target serve, base {args.base})")
    if not args.keep_image:
        cleanup.append([*PODMAN, "rmi", "--force", tag])
    build_s = build_image(args.base, tag)
    size_mb = int(podman("image", "inspect", tag, "--format", "{{.Size}}")) / 1e6

    print("\n== model repository")
    repo = Path(args.repository).resolve() if args.repository else make_repository(workdir)
    if not args.repository:
        readable_by_all(repo)
    print(f"  {repo}: {', '.join(sorted(p.parent.name for p in repo.glob('*/*')))}")

    print("\n== run")
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    cleanup.insert(0, [*PODMAN, "rm", "--force", "--time", "5", container])
    started = time.perf_counter()
    # --health-interval disable: no systemd here to time the HEALTHCHECK; image_checks runs it by hand.
    podman("create", "--name", container, "--network", "host", "--health-interval", "disable",
           "--ulimit", "nofile=1024:1024",
           "--ulimit", "nproc=1024:1024", "-e", "GRU_HOST=127.0.0.1", "-e", f"GRU_PORT={port}",
           "-e", f"GRU_GRPC_PORT={grpc_port}",
           "-v", f"{repo}:/models:ro", tag)
    created_s = time.perf_counter() - started
    started = time.perf_counter()
    podman("start", container)
    try:
        ready_s = wait_ready(url, args.ready_timeout)  # `podman start` -> first 200 from /health/ready
    except TimeoutError:
        print(podman("logs", container, check=False))
        raise
    total_s = time.perf_counter() - started + created_s
    print(f"  ready: {url} ({podman('ps', '--filter', f'name={container}', '--format', '{{.Status}}')})")

    print("\n== checks")
    uids, cmdline = server_uid(container)
    if 0 in uids:
        raise AssertionError(f"server runs as root: uids {uids}")
    print(f"  server process (PID 1: {cmdline}) uid {uids[0]} (real/effective/saved/fs {uids}): non-root")
    image_checks(container)
    installed_as_locked(container)
    bad_request(url, sorted(p.name for p in repo.iterdir() if p.is_dir())[0])
    log_checks(container)
    print("  predictions, container vs in-process onnxruntime on the host:")
    worst = compare_predictions(url, repo)
    compare_grpc(url, grpc_port, repo)

    size_ok, ready_ok = size_mb <= TARGET_SIZE_MB, ready_s <= TARGET_READY_S
    print("\n== figures")
    print(f"  image size             {size_mb:7.1f} MB   target <= {TARGET_SIZE_MB:.0f} MB  "
          f"{'ok' if size_ok else 'MISSED'}")
    print(f"  start -> ready         {ready_s:7.2f} s    target <= {TARGET_READY_S:.0f} s    "
          f"{'ok' if ready_ok else 'MISSED'}  (podman start until GET /health/ready is 200)")
    print(f"  create+start -> ready  {total_s:7.2f} s    (includes vfs copying the image into the container)")
    print(f"  build                  {build_s:7.1f} s")
    print(f"  predictions matched    max diff {worst:.2e} relative to outputs over 1, else absolute "
          f"(tolerance {TOLERANCE:.0e})")
    print(f"  server uid             {uids[0]} (non-root)")
    if not size_ok or (args.strict and not ready_ok):
        print("FAILED: a target was missed")
        return 1
    print("container test passed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base", default=LOCAL_BASE,
                        help=f"base image (default: {LOCAL_BASE}, built with debootstrap if missing)")
    parser.add_argument("--repository", help="serve this model repository instead of training tiny models")
    parser.add_argument("--keep-image", action="store_true", help="keep the image built")
    parser.add_argument("--remove-base", action="store_true", help="remove the base image at the end")
    parser.add_argument("--strict", action="store_true", help="fail when start -> ready misses its target")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args()
    if shutil.which("podman") is None:
        print("SKIP: podman is not installed; the container test needs it "
              "(Debian: apt-get install podman runc debootstrap)")
        return 0

    cleanup: list[list[str]] = []
    if args.remove_base:
        cleanup.append([*PODMAN, "rmi", "--force", args.base])
    # SIGTERM (a CI timeout) and Ctrl-C both unwind through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="gru-ctest-"))
    try:
        return run(args, cleanup, workdir)
    finally:
        print("\n== cleanup")
        for command in cleanup:
            done = subprocess.run(command, capture_output=True, text=True)
            outcome = "ok" if done.returncode == 0 else done.stderr.strip()
            print(f"  {' '.join(command[len(PODMAN):])}: {outcome}")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
