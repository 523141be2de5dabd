"""A training job that survives: SIGKILL in the middle of a run, then --resume, ends bit-identical to an
uninterrupted run; a config change refuses to resume; a NaN loss stops with a clear message and keeps
the last good checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.checkpoint import Checkpoint
from training.config import load_config
from training.loop import fit

SETTINGS = ["model.hidden_size=16", "model.num_layers=2", "model.dropout=0.2", "optim.max_epochs=25",
            "optim.patience=1000", "optim.learning_rate=0.005"]  # dropout: the torch RNG state matters too


def command(run_dir: Path, *extra: str) -> list[str]:
    sets = [arg for item in SETTINGS for arg in ("--set", item)]
    return [sys.executable, "-m", "gru_cli", "train", "--name", "r", "--run-dir", str(run_dir),
            "--no-progress", *sets, *extra]


def epochs_logged(run_dir: Path) -> int:
    path = run_dir / "r" / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def without_timing(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.open()]


def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = fit(load_config(None, ["name=r", f"run_dir={tmp_path / 'whole'}", "progress=false", *SETTINGS]))
    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while epochs_logged(killed) < 5 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # wherever it is: most of the time is inside an epoch
    process.wait()
    interrupted_at = epochs_logged(killed)
    assert 0 < interrupted_at < 25, "the kill must land mid-run"
    subprocess.run(command(killed, "--resume"), check=True, capture_output=True)
    a, b = Checkpoint.load(whole.checkpoint), Checkpoint.load(killed / "r" / "checkpoint.pt")
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.test_metrics == b.test_metrics and a.epoch == b.epoch
    assert without_timing(whole.run_dir / "metrics.jsonl") == without_timing(killed / "r" / "metrics.jsonl")


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    base = ["name=r", f"run_dir={tmp_path}", "progress=false", *SETTINGS[:3], "optim.max_epochs=2"]
    fit(load_config(None, base))
    with pytest.raises(ValueError, match=r"config changed \(optim.learning_rate: 0.001 -> 0.01\)"):
        fit(load_config(None, [*base, "optim.learning_rate=0.01"]), resume=True)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    diverge = ["data.dataset=Airline", "optim.optimizer=sgd", "optim.learning_rate=1e4",
               "optim.grad_clip=1e30", "model.hidden_size=8", "model.num_layers=1"]
    result = subprocess.run([sys.executable, "-m", "gru_cli", "train", "--name", "nan", "--run-dir",
                             str(tmp_path), "--no-progress", *[a for d in diverge for a in ("--set", d)]],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "training loss became nan" in result.stderr and "lower optim.learning_rate" in result.stderr
    assert "Traceback" not in result.stderr
    kept = Checkpoint.load(tmp_path / "nan" / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in kept.state_dict.values())
