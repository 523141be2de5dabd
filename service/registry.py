"""The MLflow model registry (the `mlflow` extra): `gru export --register NAME` logs a bundle folder as
artifacts of an MLflow run (the run that trained it, where `gru train` tracked one) and registers it as a
version of the registered model NAME; `gru pull` downloads a registered version's bundle into a model
repository, where `gru serve` loads it like any other. The tracking server is MLFLOW_TRACKING_URI, or
--mlflow. No torch here: pulling runs wherever the service does."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.bundle import BundleError, Manifest, read_manifest
from service.folders import replace_folder
from service.graph_check import load_bundle

EXPERIMENT = "gru-serve"  # where an export with no tracked training run logs its bundle


@dataclass
class Registered:
    name: str
    version: str
    run_id: str


def client(uri: str | None) -> Any:
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ValueError("no MLflow server: pass --mlflow URI or set MLFLOW_TRACKING_URI")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ValueError("the MLflow registry needs the mlflow extra: "
                         "pip install 'gru-serve[mlflow]'") from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's own defaults (7 retries with backoff, 120 s a request) made a server that is down cost 4
    # minutes, and one that accepts and never answers more than 6, before a traceback (round 10)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    return MlflowClient()


def register_bundle(bundle_dir: Path, name: str, run_id: str | None, uri: str | None = None) -> Registered:
    """Log the bundle's files to `run_id` (or to a new run of its own) and register them as a version."""
    from mlflow.exceptions import MlflowException

    mlflow = client(uri)
    manifest = Manifest.model_validate_json((bundle_dir / "manifest.json").read_text())
    if run_id is None:
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        found = mlflow.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else mlflow.create_experiment(experiment)
        run_id = mlflow.create_run(experiment_id, run_name=f"export {manifest.name}").info.run_id
        mlflow.set_terminated(run_id)
    path = f"bundle/{manifest.name}/{manifest.version}"
    mlflow.log_artifacts(run_id, str(bundle_dir), path)
    try:
        mlflow.create_registered_model(name, description="a gru-serve model bundle (gru pull serves it)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {"gru.task": manifest.task, "gru.bundle": f"{manifest.name}/{manifest.version}",
            "gru.checkpoint_sha256": manifest.checkpoint_sha256}
    version = mlflow.create_model_version(name, f"runs:/{run_id}/{path}", run_id=run_id, tags=tags)
    return Registered(name, str(version.version), run_id)


def pull(name: str, version: str, repository: Path, overwrite: bool = False, uri: str | None = None) -> Path:
    """Download models:/<name>/<version> (a registry version number, or "latest") into the repository at
    <bundle name>/<bundle version>, where its manifest says it belongs; whole or not at all (downloaded
    into a staging folder, which the repository ignores, then renamed into place)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    mlflow = client(uri)
    where = f"models:/{name}/{version}"
    try:
        if version == "latest":
            versions = mlflow.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ValueError(f"no registered model {name!r} with a version on "
                                 f"{os.environ['MLFLOW_TRACKING_URI']}")
            version = str(max(int(v.version) for v in versions))
            where = f"models:/{name}/{version}"
        repository.mkdir(parents=True, exist_ok=True)
        staging = [Path(tempfile.mkdtemp(dir=repository, prefix=".staging-pull-")) for _ in range(2)]
        try:
            folder = Path(download_artifacts(artifact_uri=where, dst_path=str(staging[0])))
            return _place(folder, staging[1], where, repository, overwrite)
        finally:
            for folder in staging:
                shutil.rmtree(folder, ignore_errors=True)
    except MlflowException as exc:  # before (round 10): a traceback (a version or name that does not exist,
        # a server that is down)
        server = os.environ["MLFLOW_TRACKING_URI"]
        raise ValueError(f"{where}: {exc.message.splitlines()[0][:300]}; check NAME/VERSION (gru pull NAME "
                         f"takes the latest) and that {server} is the MLflow server (--mlflow or "
                         "MLFLOW_TRACKING_URI)") from None


def _place(folder: Path, checking: Path, where: str, repository: Path, overwrite: bool) -> Path:
    """Check the downloaded bundle as `gru serve` will (manifest, graph, their agreement) in a staging
    folder named as its manifest says, then rename it into the repository. Before (round 10) a bundle
    tampered with in the registry, or not valid, was pulled ("pulled ... serve it") and refused only by
    the server, or was a pydantic dump."""
    if not (folder / "manifest.json").exists():
        raise ValueError(f"{where} holds no manifest.json: not a gru-serve bundle")
    try:
        manifest = read_manifest(folder)
        checked = checking / manifest.name / str(manifest.version)
        checked.parent.mkdir()
        os.replace(folder, checked)
        load_bundle(checked)
    except BundleError as exc:
        reason = str(exc).replace(f"{folder}/", "").replace(f"{checking}/", "")
        raise ValueError(f"{where} is not a bundle gru serve would load ({reason}); nothing was written. "
                         "Register a bundle `gru export` wrote (gru export --register NAME)") from None
    target = repository / manifest.name / str(manifest.version)
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists; --overwrite replaces it")
    target.parent.mkdir(parents=True, exist_ok=True)
    checked.chmod(0o755)  # a non-root server reads it
    # exchanged in one step: before (round 11) the old folder was removed first, and a server polling
    # then unloaded the version (404) until its next poll
    return replace_folder(checked, target)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="registered model NAME, NAME/VERSION or NAME/latest (the default)")
    parser.add_argument("--repository", default="models", help="model repository folder (default: models)")
    parser.add_argument("--overwrite", action="store_true", help="replace the bundle if it is there")
    parser.add_argument("--mlflow", metavar="URI",
                        help="MLflow tracking server (default: MLFLOW_TRACKING_URI)")


def run(args: argparse.Namespace) -> int:
    name, _, version = args.model.partition("/")
    target = pull(name, version or "latest", Path(args.repository), args.overwrite, args.mlflow)
    task = json.loads((target / "manifest.json").read_text())["task"]
    print(f"pulled models:/{args.model} ({task}) into {target}; "
          f"serve it: gru serve --models {args.repository}")
    return 0
