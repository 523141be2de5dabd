"""`gru train --time-budget`: the epochs the rule asks for are cut to what the measured step time says
fits, and the run ends within its budget; a budget that does not bind changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TINY = ["--set", "model.hidden_size=8", "--set", "optim.plots=false", "--set", "optim.tensorboard=false"]


def _train(tmp_path: Path, name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "gru_cli", "train", "--name", name, "--run-dir",
                             str(tmp_path), "--no-progress", *TINY, *args], capture_output=True, text=True,
                            check=True)
    return result.stdout


def test_a_budget_too_small_for_the_rule_cuts_the_epochs_and_the_run_ends_within_it(tmp_path: Path) -> None:
    out = _train(tmp_path, "cut", "--time-budget", "20", "--max-epochs", "5000")  # 25,000 steps: never fit
    assert "optim.max_epochs=" in out and "(time budget 20 s: a step takes" in out
    epochs = int(out.split("(time budget 20 s")[0].rsplit("optim.max_epochs=", 1)[1])
    assert 1 <= epochs < 5000
    [end] = [line for line in out.splitlines() if line.startswith("best epoch")]
    assert end.endswith("(time budget 20 s)")
    # from the start of gru train (imports included)
    run_seconds = int(end.rsplit("; ", 1)[1].split(" s ")[0])
    assert run_seconds <= 20 * 1.25, out  # the end (evaluations, report) is estimated, not measured


def test_a_budget_that_fits_keeps_the_rule_s_epochs(tmp_path: Path) -> None:
    out = _train(tmp_path, "fits", "--max-epochs", "3")
    assert "time budget 120 s: a step takes" in out and "3 epochs take" in out and "which fits" in out


def test_the_budget_counts_from_when_gru_train_started(tmp_path: Path) -> None:
    """`gru train` passes its own start (before importing torch): KDD-TSAD runs at defaults ended at
    122-127 s by the wall clock against a 120 s budget that counted from fit()."""
    import time

    import yaml

    from training.config import load_config
    from training.loop import fit

    base = ["data.dataset=ItalyPowerDemand", f"run_dir={tmp_path}", "model.hidden_size=8",
            "optim.plots=false", "optim.tensorboard=false", "optim.time_budget=8", "optim.max_epochs=5000"]
    fit(load_config(None, [*base, "name=late"]), started=time.perf_counter() - 30)
    fit(load_config(None, [*base, "name=now"]))

    def epochs(name: str) -> int:
        return yaml.safe_load((tmp_path / name / "config.yaml").read_text())["optim"]["max_epochs"]

    assert epochs("late") == 1 < epochs("now")
