"""MLflow tracking (the `mlflow` extra), on when a tracking server is configured: MLFLOW_TRACKING_URI, or
`gru train --mlflow URI`. The run's config goes in as params, every epoch's metrics as they come, and at the
end the test metrics and the run folder's report, plots, config and metrics.jsonl as artifacts. The MLflow
run's id is kept in the run folder (mlflow_run.json): a resumed run continues the same MLflow run, and
`gru export --register` logs the bundle to the run that trained it. Only rank 0 tracks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from training.config import ResolvedConfig

RUN_FILE = "mlflow_run.json"
DEFAULT_EXPERIMENT = "gru-serve"  # MLFLOW_EXPERIMENT_NAME chooses another


def configured() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def client() -> Any:
    """An MlflowClient for the configured server; a clear error where the extra is missing."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ValueError("MLFLOW_TRACKING_URI (or --mlflow) is set but mlflow is not installed: "
                         "pip install 'gru-serve[mlflow]', or unset it") from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in a job's log
    return MlflowClient()


def experiment_id(mlflow: Any) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    found = mlflow.get_experiment_by_name(name)
    return str(found.experiment_id if found else mlflow.create_experiment(name))


def stored_run_id(run_dir: Path) -> str | None:
    """The MLflow run the folder was tracked in, if that was on the server configured now."""
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return str(stored["run_id"]) if stored["tracking_uri"] == os.environ.get("MLFLOW_TRACKING_URI") else None


class MlflowRun:
    """One MLflow run, addressed by its id through the tracking server's API (no global active run)."""

    def __init__(self, mlflow: Any, run_id: str):
        self.mlflow, self.run_id = mlflow, run_id

    @classmethod
    def start(cls, run_dir: Path, config: ResolvedConfig, resume: bool) -> MlflowRun:
        mlflow = client()
        run_id = stored_run_id(run_dir) if resume else None
        if run_id is None:
            tags = {"gru.run_folder": str(run_dir.resolve()), "gru.dataset": config.data.dataset}
            run_id = mlflow.create_run(experiment_id(mlflow), run_name=config.name, tags=tags).info.run_id
            params = _flat(config.to_dict())
            from mlflow.entities import Param

            items = [Param(k, str(v)) for k, v in params.items()]
            for start in range(0, len(items), 100):  # the API takes at most 100 params a call
                mlflow.log_batch(run_id, params=items[start:start + 100])
        else:
            mlflow.update_run(run_id, status="RUNNING")
        (run_dir / RUN_FILE).write_text(json.dumps({"run_id": run_id,
                                                    "tracking_uri": os.environ["MLFLOW_TRACKING_URI"]}))
        return cls(mlflow, run_id)

    @classmethod
    def of(cls, run_dir: Path) -> MlflowRun | None:
        """The run this folder is tracked in, where tracking is on."""
        run_id = stored_run_id(run_dir) if configured() else None
        return cls(client(), run_id) if run_id else None

    def log_metrics(self, values: dict[str, Any], step: int, prefix: str = "") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(prefix + k, float(v), now, step) for k, v in values.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)]
        self.mlflow.log_batch(self.run_id, metrics=metrics)

    def finish(self, test: dict[str, Any], files: list[Path], step: int) -> None:
        self.log_metrics(test, step, prefix="test_")
        for path in files:
            if path.exists():
                self.mlflow.log_artifact(self.run_id, str(path))
        self.mlflow.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        self.mlflow.set_terminated(self.run_id, "FAILED")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat
