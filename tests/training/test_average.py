"""optim.average (stochastic weight averaging, training/loop.py _Average): a final fit keeps the mean of
its last epochs' weights, the same after an interruption and --resume; the model it keeps exports with
parity and streams chunked = whole; a held-out validation split keeps its best epoch as before; a bad
share is refused naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.verify import TOLERANCE
from service.batching import compute_now
from training.checkpoint import Checkpoint, load_payload
from training.config import load_config
from training.loop import fit
from training.resume import LAST

TINY = ["progress=false", "optim.plots=false", "optim.tensorboard=false", "model.hidden_size=8",
        "optim.max_epochs=4", "optim.time_budget=null", "optim.members=1"]


def test_a_final_fit_keeps_the_mean_of_its_last_epochs_and_exports_with_parity(tmp_path: Path) -> None:
    from tests.helpers import exported_runtime

    run = tmp_path / "swa"
    before_last: dict[str, torch.Tensor] = {}

    def keep_epoch_three(epoch: int, record: dict) -> None:  # last.pt still holds epoch 3's weights
        if epoch == 4:
            before_last.update(load_payload(run / LAST)["state_dict"])

    fit(load_config(None, [*TINY, "name=swa", f"run_dir={tmp_path}", "optim.average=0.5"]),
        on_epoch=keep_epoch_three)
    last = load_payload(run / LAST)["state_dict"]  # epoch 4's weights, as training left them
    kept = Checkpoint.load(run / "checkpoint.pt").state_dict
    assert not torch.equal(kept["head.weight"], last["head.weight"])  # not the last epoch's
    for name, value in kept.items():  # epochs 3 and 4 (half of 4), averaged
        torch.testing.assert_close(value, (before_last[name] + last[name]) / 2 if value.is_floating_point()
                                   else last[name])

    runtime = exported_runtime(run / "checkpoint.pt", tmp_path / "models", "swa")
    sequence = np.random.default_rng(1).normal(size=(24, 1)).astype(np.float32)
    whole = runtime.predict(sequence[None])[0]
    state = None
    for chunk in (sequence[:7], sequence[7:8], sequence[8:]):
        result = compute_now(runtime, [chunk], None if state is None else state[None])
        answer, state = result.outputs[0], result.states[0]
    assert np.abs(answer - whole).max() <= TOLERANCE


class _Stop(Exception):
    pass


def test_a_run_interrupted_while_averaging_resumes_to_the_same_mean(tmp_path: Path) -> None:
    settings = [*TINY, f"run_dir={tmp_path}", "optim.average=0.5"]
    fit(load_config(None, [*settings, "name=whole"]))

    def stop_at_four(epoch: int, record: dict) -> None:  # after epoch 3 is in the mean, before epoch 4 is
        if epoch == 4:
            raise _Stop

    with pytest.raises(_Stop):
        fit(load_config(None, [*settings, "name=cut"]), on_epoch=stop_at_four)
    fit(load_config(None, [*settings, "name=cut"]), resume=True)
    whole = Checkpoint.load(tmp_path / "whole" / "checkpoint.pt").state_dict
    resumed = Checkpoint.load(tmp_path / "cut" / "checkpoint.pt").state_dict
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


def test_without_a_final_fit_the_best_validation_epoch_is_kept_as_before(tmp_path: Path) -> None:
    settings = [*TINY, f"run_dir={tmp_path}", "optim.final_fit=false"]
    plain = fit(load_config(None, [*settings, "name=plain"]))
    averaged = fit(load_config(None, [*settings, "name=avg", "optim.average=0.5"]))
    assert averaged.best_epoch == plain.best_epoch
    assert averaged.test_metrics["accuracy"] == plain.test_metrics["accuracy"]


def test_a_share_of_one_or_more_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match="optim.average"):
        load_config(None, ["optim.average=1"])
