"""deploy/ manifests: structure, probes on endpoints the app really serves, consistent ports, mounts and
settings that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.api.app import create_app
from service.settings import Settings

DEPLOY = Path(__file__).parents[2] / "deploy"
APP_PATHS = set(create_app(Settings(model_repository=Path("unused"))).openapi()["paths"])
SETTINGS = {f"GRU_{name.upper()}" for name in Settings.model_fields}


def documents(relative: str) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / relative).read_text()) if d]
    assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs)
    return {d["kind"]: d for d in docs}


def check_container(container: dict, mount_root: str | None = None) -> None:
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(env) <= SETTINGS, f"unknown settings: {set(env) - SETTINGS}"
    port = next(p for p in container["ports"])
    assert env["GRU_PORT"] == str(port["containerPort"]) and env["GRU_HOST"] == "0.0.0.0"
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in APP_PATHS and "health" in get["path"]
        assert get["port"] in (port.get("name"), port["containerPort"])
    assert {"requests", "limits"} <= set(container["resources"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[env["GRU_MODEL_REPOSITORY"]]["readOnly"] is True
    if mount_root is not None:
        assert env["GRU_MODEL_REPOSITORY"] == mount_root


def test_kubernetes_deployment_service_and_autoscaler() -> None:
    docs = documents("kubernetes/gru-serve.yaml")
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    [container] = pod["spec"]["containers"]
    check_container(container)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(env["GRU_SHUTDOWN_TIMEOUT_S"]) + 5
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes
    ports = {p["name"]: p for p in container["ports"]}
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    assert str(ports["grpc"]["containerPort"]) == env["GRU_GRPC_PORT"] != env["GRU_PORT"]
    [grpc] = [p for p in service["spec"]["ports"] if p["targetPort"] == "grpc"]
    assert grpc["appProtocol"] == "kubernetes.io/h2c"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in APP_PATHS
    assert annotations["prometheus.io/port"] == env["GRU_PORT"]


def test_kserve_custom_predictor_runs_gru_serve() -> None:
    isvc = documents("kserve/inferenceservice-gru-serve.yaml")["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    [container] = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    check_container(container, mount_root="/mnt/models")
    assert container["securityContext"]["runAsNonRoot"] is True


def test_kserve_grpc_predictor_exposes_only_the_grpc_port() -> None:
    """Knative routes one port per container; h2c names it HTTP/2 (gRPC)."""
    isvc = documents("kserve/inferenceservice-gru-serve-grpc.yaml")["InferenceService"]
    [container] = isvc["spec"]["predictor"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["name"] == "kserve-container" and set(env) <= SETTINGS
    [port] = container["ports"]
    assert port["name"] == "h2c" and str(port["containerPort"]) == env["GRU_GRPC_PORT"] != env["GRU_PORT"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["tcpSocket"]["port"] == port["containerPort"]
    assert env["GRU_MODEL_REPOSITORY"] == "/mnt/models" and env["GRU_HOST"] == "0.0.0.0"
    rest = documents("kserve/inferenceservice-gru-serve.yaml")["InferenceService"]
    [rest_container] = rest["spec"]["predictor"]["containers"]
    assert {"name": "GRU_GRPC_PORT", "value": "0"} in rest_container["env"]  # its one port is REST


def test_kserve_triton_runtime_uses_the_exported_repository() -> None:
    isvc = documents("kserve/inferenceservice-triton.yaml")["InferenceService"]
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "onnx" and model["protocolVersion"] == "v2"
    assert model["runtime"] == "kserve-tritonserver" and model["storageUri"]


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/health/ready", "/metrics"])
def test_probe_and_scrape_paths_are_served(path: str) -> None:
    assert path in APP_PATHS
