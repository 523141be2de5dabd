"""`gru train` from the command line: where a run goes when it is given no name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gru_cli import main


def test_runs_without_a_name_never_share_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--run-dir", str(tmp_path), "--max-epochs", "1", "--no-progress",
            "--set", "model.hidden_size=8", "--set", "optim.plots=false", "--set", "optim.tensorboard=false"]
    assert main(args) == 0 and main(args) == 0
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and all(re.fullmatch(r"ItalyPowerDemand-\d{8}-\d{6}(-2)?", f) for f in folders)
    said = re.findall(r"^run name: (\S+) \(no --name given\)", capsys.readouterr().out, re.M)
    assert sorted(said) == folders


@pytest.mark.parametrize("run_dir, name", [("taken", "run"), (".", "taken")])
def test_a_run_folder_that_is_a_file_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          run_dir: str, name: str) -> None:
    (tmp_path / "taken").write_text("a file")
    args = ["train", "--run-dir", str(tmp_path / run_dir), "--name", name, "--dataset", "file",
            "--set", "data.task=classification", "--set", "data.path=/nowhere.csv"]
    assert main(args) == 2  # before the data (which does not exist) is read
    assert re.search(r"gru train: error: run folder .*: .*taken is a file, not a folder; choose another "
                     r"--name or --run-dir", capsys.readouterr().err)
