"""The Dockerfile and docker-compose.yml hold together: targets, users, health checks, volumes. The images
themselves are built and run by scripts/container_test.py (podman); the CUDA target cannot be built here,
so what it must say is checked from the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def stages() -> dict[str, list[str]]:
    """Stage name -> its instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE):
            current = found.setdefault(match.group(1), [])
        if line and not line.startswith("#"):
            current.append(line)
    return found


def test_default_target_is_the_cpu_serving_image() -> None:
    assert list(stages())[-1] == "serve"
    assert stages()["serve"][0] == "FROM serve-runtime AS serve"


@pytest.mark.parametrize("stage", ["serve-runtime", "serve-cuda"])
def test_serving_images_run_as_non_root_with_a_readiness_healthcheck(stage: str) -> None:
    lines = stages()[stage]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    health = [line for line in lines if line.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "/health/ready" in health[0]
    assert any(line.startswith("CMD") and '"serve"' in line for line in lines)


@pytest.mark.parametrize("stage", ["serve-runtime", "serve-cuda"])
def test_serving_images_expose_rest_and_grpc(stage: str) -> None:
    text = " ".join(stages()[stage])
    ports = {name: re.search(rf"{name}=(\d+)", text)[1] for name in ("GRU_PORT", "GRU_GRPC_PORT")}
    [expose] = [line.split()[1:] for line in stages()[stage] if line.startswith("EXPOSE")]
    assert sorted(expose) == sorted(ports.values()) and len(set(expose)) == 2
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {f"{p}:{p}" for p in ports.values()} <= set(compose["services"]["serve"]["ports"])


def test_serving_images_install_only_the_service() -> None:
    """No torch: only service/ is copied into the serving builds, and only the serve extra's lock installed,
    checked by hash; the project itself resolves nothing more."""
    for stage in ("serve-build", "serve-cuda"):
        text = "\n".join(stages()[stage])
        assert "COPY service ./service" in text
        assert "training" not in text and "export ./export" not in text and "torch" not in text
        assert re.search(r"--require-hashes --no-deps\s+-r serve.txt", text) and "--no-deps ." in text
        assert "constraints.txt" not in text


@pytest.mark.parametrize("stage", ["serve-runtime", "serve-cuda"])
def test_the_server_user_has_a_home(stage: str) -> None:
    """Without one, onnxruntime's first words are a plain-text warning ahead of the JSON logs."""
    [useradd] = [line for line in stages()[stage] if "useradd" in line]
    assert "--create-home" in useradd and "--no-create-home" not in useradd


def test_cuda_image_uses_onnxruntime_gpu_and_the_cuda_provider() -> None:
    text = "\n".join(stages()["serve-cuda"])
    assert "FROM ${CUDA_BASE_IMAGE} AS serve-cuda" in text
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"ARG CUDA_BASE_IMAGE=nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-", dockerfile)
    assert "pip uninstall --yes onnxruntime" in text and '"${ONNXRUNTIME_GPU}"' in text
    assert "GRU_EXECUTION_PROVIDER=cuda" in text


def test_compose_serves_what_the_training_job_wrote() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    train, serve = compose["services"]["train"], compose["services"]["serve"]
    assert train["build"]["target"] == "train" and serve["build"]["target"] == "serve"
    assert serve["depends_on"]["train"]["condition"] == "service_completed_successfully"
    job = " ".join(train["command"])
    assert "gru train" in job and "gru export" in job and "--repository /models" in job
    assert "models:/models" in train["volumes"]
    assert "models:/models:ro" in serve["volumes"]
    assert set(compose["volumes"]) >= {"models", "runs"}
