"""One task vocabulary: training's config, the checkpoint and the manifest say the task in the same
words, and the manifest's output kind follows from its task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from service.bundle import MANIFEST_FILE, BundleError, read_manifest
from service.heads import Task, head_for
from training.config import ModelConfig
from training.data.dataset import SequenceData


def test_training_says_the_task_in_the_bundles_words() -> None:
    assert ModelConfig.model_fields["task"].annotation is Task
    assert get_type_hints(SequenceData)["task"] is Task
    assert {head_for(task).kind for task in get_args(Task)} == {"probabilities", "forecast",
                                                               "step_probabilities"}


def _rewritten(repository: Path, tmp_path: Path, name: str, **changes: object) -> Path:
    """A copy of the bundle's manifest with top-level `changes` (output.kind as output_kind)."""
    manifest = json.loads((repository / name / "1" / MANIFEST_FILE).read_text())
    if "output_kind" in changes:
        manifest["output"]["kind"] = changes.pop("output_kind")
    manifest |= changes
    folder = tmp_path / name / "1"
    folder.mkdir(parents=True)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def test_an_output_kind_that_contradicts_the_task_is_refused_naming_the_field(repository: Path,
                                                                               tmp_path: Path) -> None:
    assert read_manifest(repository / "italy" / "1").output.kind == "probabilities"
    with pytest.raises(BundleError, match="output.kind 'forecast' does not fit task 'classification'"):
        read_manifest(_rewritten(repository, tmp_path, "italy", output_kind="forecast"))


def test_an_older_forecaster_that_says_regression_still_loads(repository: Path, tmp_path: Path) -> None:
    manifest = read_manifest(_rewritten(repository, tmp_path, "airline", task="regression"))
    assert (manifest.task, manifest.output.kind) == ("regression", "forecast")
