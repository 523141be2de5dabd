"""The repository degrades, never strands: removed and failing versions give way to the newest one that
loads, stray folders are ignored (and said so once), a non-atomic copy loads once it is complete,
symlinks out of the repository are refused, a re-export under the same version is a new runtime."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from service.repository import Repository, scan
from service.settings import Settings
from tests.service.test_repository import add_version


@pytest.fixture
def repo_dir(tmp_path: Path, repository: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(repository / "italy", root / "italy")
    shutil.copytree(repository / "airline", root / "airline")
    return root


def make(root: Path, policy: str = "latest:1") -> Repository:
    repo = Repository(Settings(model_repository=root, version_policy=policy))
    repo.load_all()
    return repo


def corrupt(bundle: Path) -> Path:
    with open(bundle / "model.onnx", "ab") as graph:
        graph.write(b"\0")
    return bundle


def index_of(repo: Repository) -> dict[tuple[str, str], dict]:
    return {(e["name"], e["version"]): e for e in repo.index()}


def test_removing_the_serving_version_falls_back_to_the_newest_older_one(repo_dir: Path) -> None:
    add_version(repo_dir / "italy", 1, 2)
    repo = make(repo_dir)
    assert repo.versions("italy") == [2]
    shutil.rmtree(repo_dir / "italy" / "2")
    [report] = repo.poll()
    assert (report.loaded, report.unloaded, report.serving) == ([1], [2], [1])
    entry = index_of(repo)[("italy", "1")]
    assert entry["state"] == "READY" and "version 2 was removed" in entry["reason"]
    assert repo.poll() == []  # settled


def test_a_failing_newest_version_is_skipped_for_the_previous_one(repo_dir: Path) -> None:
    add_version(repo_dir / "italy", 1, 2)
    repo = make(repo_dir, "latest:2")
    corrupt(add_version(repo_dir / "italy", 1, 3))
    [report] = repo.poll()
    assert 3 in report.failed and report.serving == [1, 2] and report.unloaded == []
    shutil.rmtree(repo_dir / "italy" / "2")  # now only 1 loads: it serves alone
    assert repo.poll()[0].serving == [1]


def test_start_up_serves_the_newest_version_that_loads(repo_dir: Path, caplog) -> None:
    corrupt(add_version(repo_dir / "italy", 1, 2))
    with caplog.at_level(logging.ERROR, "gru_serve.repository"):
        repo = make(repo_dir)
    assert repo.versions("italy") == [1] and repo.ready
    index = index_of(repo)
    assert index[("italy", "2")]["state"] == "UNAVAILABLE" and "sha256" in index[("italy", "2")]["reason"]
    assert "version 2 failed to load" in index[("italy", "1")]["reason"]
    assert "italy version 2 failed to load" in caplog.text


def test_start_up_with_no_loadable_version_serves_the_other_models(repo_dir: Path) -> None:
    corrupt(repo_dir / "italy" / "1")
    repo = make(repo_dir)
    assert repo.versions("italy") == [] and repo.versions("airline") == [1] and repo.ready
    assert index_of(repo)[("italy", "1")]["state"] == "UNAVAILABLE"


@pytest.mark.parametrize("folder", ["²", "02", "-1", "1.0", " 3", "0", "+4", "٣", "1e3"])
def test_folders_that_are_not_version_numbers_are_ignored(repo_dir: Path, folder: str, caplog) -> None:
    add_version(repo_dir / "italy", 1, 2)
    shutil.copytree(repo_dir / "italy" / "2", repo_dir / "italy" / folder)
    with caplog.at_level(logging.ERROR, "gru_serve.repository"):
        repo = make(repo_dir)
        add_version(repo_dir / "airline", 1, 2)  # the watch keeps working for every model
        [report] = repo.poll()
        repo.poll()
    assert (report.name, report.serving) == ("airline", [2]) and repo.versions("italy") == [2]
    assert caplog.text.count("not a version number") == 1  # logged once, not at every poll
    entry = index_of(repo)[("italy", folder)]
    assert entry["state"] == "UNAVAILABLE" and "ignored: not a version number" in entry["reason"]
    assert sorted(scan(repo_dir).versions["italy"]) == [1, 2]


def test_a_non_atomic_copy_loads_at_the_first_poll_after_it_completes(repo_dir: Path) -> None:
    repo = make(repo_dir)
    staged = add_version(repo_dir / "italy", 1, 2)
    graph = (staged / "model.onnx").read_bytes()
    (staged / "model.onnx").write_bytes(graph[: len(graph) // 2])  # the copy is still running
    [report] = repo.poll()
    assert 2 in report.failed and repo.versions("italy") == [1]
    assert repo.poll() == []  # unchanged: not retried
    with open(staged / "model.onnx", "ab") as rest:  # the copy finishes; the manifest is untouched
        rest.write(graph[len(graph) // 2:])
    [report] = repo.poll()
    assert (report.loaded, report.serving) == ([2], [2])
    assert index_of(repo)[("italy", "2")] == {"name": "italy", "version": "2", "state": "READY", "reason": ""}


def test_a_serving_version_whose_files_break_keeps_serving_what_it_loaded(repo_dir: Path) -> None:
    repo = make(repo_dir)
    serving = repo.get("italy")
    corrupt(repo_dir / "italy" / "1")
    [report] = repo.poll()
    assert 1 in report.failed and repo.get("italy") is serving
    entry = index_of(repo)[("italy", "1")]
    assert entry["state"] == "READY" and "files on disk failed" in entry["reason"]


def test_a_removed_version_keeps_serving_while_no_other_version_loads(repo_dir: Path) -> None:
    add_version(repo_dir / "italy", 1, 2)
    repo = make(repo_dir)
    corrupt(repo_dir / "italy" / "1")
    shutil.rmtree(repo_dir / "italy" / "2")
    repo.poll()
    assert repo.versions("italy") == [2]
    entry = index_of(repo)[("italy", "2")]
    assert entry["state"] == "READY" and "folder was removed" in entry["reason"]
    shutil.rmtree(repo_dir / "italy")  # the whole model removed: it is unloaded
    repo.poll()
    assert repo.get("italy") is None


def test_symlinks_out_of_the_repository_are_refused(repo_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(repo_dir / "italy" / "1", outside / "2")
    (repo_dir / "italy" / "2").symlink_to(outside / "2")
    shutil.copytree(repo_dir / "airline", outside / "airline_copy")
    (repo_dir / "airline_copy").symlink_to(outside / "airline_copy")
    inside = add_version(repo_dir / "italy", 1, 3)
    (inside / "model.onnx").unlink()
    (inside / "model.onnx").symlink_to(outside / "2" / "model.onnx")
    os.symlink(repo_dir / "airline" / "1", repo_dir / "airline" / "2")  # inside: allowed (then refused
    repo = make(repo_dir)  # as a bundle: its manifest says version 1)
    assert repo.versions("italy") == [1] and "airline_copy" not in repo.models
    index = index_of(repo)
    assert "outside the model repository" in index[("italy", "2")]["reason"]
    assert "outside the model repository" in index[("airline_copy", "")]["reason"]
    assert "outside the model repository" in index[("italy", "3")]["reason"]
    assert "bundle sits in airline/2" in index[("airline", "2")]["reason"]


def test_a_re_export_under_the_same_version_is_a_new_runtime(repo_dir: Path, tmp_path: Path) -> None:
    from export.bundle import export_checkpoint
    from tests.helpers import train_tiny

    repo = make(repo_dir)
    before = repo.get("italy")
    other = train_tiny(tmp_path / "runs", "italy_other", "optim.seed=1", "optim.max_epochs=2")
    export_checkpoint(other.checkpoint, repo_dir, "italy", version=1, overwrite=True)
    [report] = repo.poll()
    assert (report.loaded, report.unloaded) == ([1], [1])
    after = repo.get("italy")
    assert after is not before and after.manifest.onnx.sha256 != before.manifest.onnx.sha256
