"""The model repository in-process, on real bundles and real onnxruntime sessions: version policies,
reload swaps, failures that keep what serves, lifecycle hooks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.bundle import BundleError, read_manifest
from service.repository import Repository, VersionPolicy
from service.settings import Settings


def add_version(model_dir: Path, source: int, version: int) -> Path:
    """A real bundle published as another version: copied, manifest renumbered, renamed into place."""
    staging = model_dir / f".staging-{version}"
    shutil.copytree(model_dir / str(source), staging)
    manifest = read_manifest(staging).model_copy(update={"version": version})
    (staging / "manifest.json").write_text(manifest.to_json())
    staging.rename(model_dir / str(version))
    return model_dir / str(version)


@pytest.fixture
def repo_dir(tmp_path: Path, repository: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(repository / "italy", root / "italy")
    return root


def make(root: Path, policy: str = "latest:1", **hooks) -> Repository:
    repo = Repository(Settings(model_repository=root, version_policy=policy), **hooks)
    repo.load_all()
    return repo


@pytest.mark.parametrize("text, available, selected", [
    ("latest:1", [1, 2, 3], [3]), ("latest:2", [3, 1, 2], [2, 3]), ("all", [2, 1], [1, 2]),
    ("specific:1,3", [1, 2, 3], [1, 3]), ("specific:4", [1, 2], []),
])
def test_version_policy(text: str, available: list[int], selected: list[int]) -> None:
    assert VersionPolicy.parse(text).select(available) == selected


@pytest.mark.parametrize("text", ["latest:0", "latest", "newest:1", "specific:", "specific:a", "all:2"])
def test_bad_version_policy_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="latest:N"):
        VersionPolicy.parse(text)


def test_several_versions_and_the_default_is_the_newest(repo_dir: Path) -> None:
    add_version(repo_dir / "italy", 1, 2)
    repo = make(repo_dir, "all")
    assert repo.versions("italy") == [1, 2]
    assert repo.get("italy").manifest.version == 2 and repo.get("italy", 1).manifest.version == 1
    assert repo.get("italy", 3) is None and repo.get("nope") is None
    (repo_dir / "italy" / "serving.json").write_text(json.dumps({"version_policy": "specific:1"}))
    assert repo.load_model("italy").serving == [1]
    assert repo.get("italy").manifest.version == 1


def test_reload_swaps_and_a_held_runtime_keeps_working(repo_dir: Path) -> None:
    loaded, unloaded = [], []
    repo = make(repo_dir, on_load=[loaded.append], on_unload=[unloaded.append])
    held = repo.get("italy")  # a request in flight holds this
    add_version(repo_dir / "italy", 1, 2)
    [report] = repo.poll()
    assert (report.loaded, report.unloaded, report.serving) == ([2], [1], [2])
    assert repo.get("italy").manifest.version == 2 and unloaded == [held]
    x = np.ones((2, 24, 1), np.float32)
    np.testing.assert_array_equal(held.predict(x), repo.get("italy").predict(x))  # same graph, both answer
    assert [r.manifest.version for r in loaded] == [1, 2]
    assert repo.poll() == []  # nothing changed on disk: nothing reloaded


def test_a_broken_bundle_leaves_the_serving_version_untouched(repo_dir: Path) -> None:
    repo = make(repo_dir)
    serving = repo.get("italy")
    broken = add_version(repo_dir / "italy", 1, 2)
    with open(broken / "model.onnx", "ab") as graph:
        graph.write(b"\0")
    [report] = repo.poll()
    assert 2 in report.failed and "onnx.sha256 does not match" in report.failed[2]
    assert repo.get("italy") is serving and report.serving == [1]
    assert repo.poll() == []  # an unchanged failure is not retried by the watch
    index = {(e["name"], e["version"]): e for e in repo.index()}
    assert index[("italy", "2")]["state"] == "UNAVAILABLE" and "sha256" in index[("italy", "2")]["reason"]
    assert index[("italy", "1")]["state"] == "READY"


def test_a_failing_load_hook_keeps_the_old_version(repo_dir: Path) -> None:
    def refuse_v2(runtime) -> None:
        if runtime.manifest.version == 2:
            raise RuntimeError("batcher could not start")

    repo = make(repo_dir, on_load=[refuse_v2])
    add_version(repo_dir / "italy", 1, 2)
    report = repo.load_model("italy")
    assert report.failed == {2: "RuntimeError: batcher could not start"} and repo.versions("italy") == [1]


def test_unload_and_load_through_the_admin_calls(repo_dir: Path) -> None:
    repo = make(repo_dir)
    assert repo.unload_model("italy").unloaded == [1]
    assert repo.get("italy") is None and not repo.ready
    assert repo.poll() == []  # the watch leaves an admin-unloaded model alone
    assert repo.load_model("italy").serving == [1] and repo.ready
    with pytest.raises(BundleError, match="no bundles"):
        repo.load_model("nope")


def test_a_removed_model_is_unloaded_by_the_watch(repo_dir: Path) -> None:
    repo = make(repo_dir)
    shutil.rmtree(repo_dir / "italy")
    [report] = repo.poll()
    assert report.unloaded == [1] and repo.models == {}


def test_a_new_model_appears_and_a_bad_serving_config_is_reported(repo_dir: Path, repository: Path) -> None:
    repo = make(repo_dir)
    shutil.copytree(repository / "airline", repo_dir / "airline")
    [report] = repo.poll()
    assert (report.name, report.loaded) == ("airline", [1]) and sorted(repo.models) == ["airline", "italy"]
    (repo_dir / "italy" / "serving.json").write_text('{"version_policy": "newest"}')
    report = repo.load_model("italy")
    assert "serving.json" in report.failed[0] and "latest:N" in report.failed[0]
    assert repo.versions("italy") == [1]  # still serving
