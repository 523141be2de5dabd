"""A training job that survives: SIGKILL at a random epoch, then --resume, ends bit-identical to an
uninterrupted run, for both GRU variants (bench.resume does it at more moments); a config change
refuses to resume; a NaN loss stops with a clear message and keeps the last good checkpoint."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.resume import check
from training.checkpoint import Checkpoint
from training.config import load_config
from training.loop import fit

SETTINGS = ["model.hidden_size=16", "model.num_layers=2", "model.dropout=0.2"]


@pytest.mark.parametrize("variant", ["after", "before"])
def test_sigkill_at_a_random_epoch_then_resume_is_bit_identical(variant: str, tmp_path: Path) -> None:
    """Both GRU variants: nn.GRU (reset after) and the loop GRU (reset before), each a fresh process."""
    [outcome] = check(variant, tmp_path, epochs=12, moments=1, rng=random.Random())
    assert outcome.identical, outcome


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    base = ["name=r", f"run_dir={tmp_path}", "progress=false", *SETTINGS[:3], "optim.max_epochs=2"]
    fit(load_config(None, base))
    with pytest.raises(ValueError, match=r"config changed \(optim.learning_rate: 0.003 -> 0.01\)"):
        fit(load_config(None, [*base, "optim.learning_rate=0.01"]), resume=True)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    diverge = ["data.dataset=Airline", "optim.optimizer=sgd", "optim.learning_rate=1e4",
               "optim.grad_clip=1e30", "model.hidden_size=8", "model.num_layers=1"]
    result = subprocess.run([sys.executable, "-m", "gru_cli", "train", "--name", "nan", "--run-dir",
                             str(tmp_path), "--no-progress", *[a for d in diverge for a in ("--set", d)]],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert re.search(r"training loss became (nan|inf) at epoch", result.stderr)
    assert "lower optim.learning_rate" in result.stderr
    assert "Traceback" not in result.stderr
    kept = Checkpoint.load(tmp_path / "nan" / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in kept.state_dict.values())
