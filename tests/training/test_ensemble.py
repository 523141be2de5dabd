"""An ensemble merged into one GRUModel (training/ensemble.py) answers the mean of its members' outputs,
for every task, front end, reset variant, depth and direction, on ragged batches; exported, it passes
parity and streams chunked = whole."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from export.verify import TOLERANCE
from service.batching import compute_now
from training.checkpoint import Checkpoint
from training.config import ResolvedModelConfig, load_config
from training.data import load_data
from training.data.dataset import pad_sequences
from training.ensemble import MAX_MEMBERS, choose_members, merge, wanted_members
from training.loop import evaluate, fit
from training.model import GRUModel


def _members(k: int = 3, **settings) -> list[GRUModel]:
    """k members of one config with different random weights; shared parts (normaliser, linear path)
    set to the same non-trivial values, as fitting on the same data does."""
    base = dict(input_size=3, hidden_size=5, num_layers=1, task="classification", output_size=4, patch=3,
                frontend="conv")
    config = ResolvedModelConfig(**(base | settings))  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(99)
    shared = {}
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = GRUModel(config)
        with torch.no_grad():
            for name, value in model.state_dict().items():
                if name.startswith(("normaliser.", "linear.")):
                    if name not in shared:
                        shared[name] = value + torch.rand(value.shape, generator=generator) * 0.5
                    value.copy_(shared[name])
                elif name.startswith("head."):  # a value model's head starts at zero: make it answer
                    value.copy_(torch.randn(value.shape, generator=generator) * 0.3)
        members.append(model.eval())
    return members


CASES = {
    "classification conv": dict(),
    "classification reset before, 2 layers": dict(reset="before", num_layers=2),
    "classification none, relu": dict(frontend="none", patch=1, activation="relu"),
    "classification patch, mean readout": dict(frontend="patch", readout=["mean"]),
    "classification bidirectional 2 layers": dict(bidirectional=True, num_layers=2),
    "sigmoid head": dict(head="sigmoid", output_size=1),
    "per-series normalisation": dict(normalise="series"),
    "regression with a linear path": dict(task="regression", output_size=2, linear_steps=4),
    "regression with a linear path and its summary": dict(task="regression", output_size=2, linear_steps=4,
                                                          linear_summary=True),
    "forecast with a seasonal skip": dict(task="forecast", output_size=6, frontend="none", patch=1,
                                          seasonal_skip=4, window_scaling=True),
    "forecast, the naive with drift": dict(task="forecast", output_size=6, frontend="none", patch=1,
                                           seasonal_skip=1, drift=0.5, window_scaling=True),
    "tagging": dict(task="tagging", frontend="none", patch=1, num_layers=2),
}


@pytest.mark.parametrize("settings", CASES.values(), ids=CASES.keys())
def test_the_merged_model_answers_the_mean_of_its_members(settings: dict) -> None:
    members = _members(**settings)
    merged = merge(members)
    assert merged.config.hidden_size == 3 * members[0].config.hidden_size
    rng = np.random.default_rng(0)
    positive = settings.get("window_scaling", False)  # a window's level divides: keep it away from 0
    sequences = [rng.normal(size=(n, 3)).astype(np.float32) + 3 * positive for n in (13, 4, 9, 1)]
    X, lengths = (torch.as_tensor(a) for a in pad_sequences(sequences))
    with torch.no_grad():
        mean = torch.stack([m(X, lengths)[0] for m in members]).mean(dim=0)
        out = merged(X, lengths)[0]
    assert torch.allclose(out, mean, atol=1e-5), float((out - mean).abs().max())


def test_members_that_differ_where_they_must_not_are_refused() -> None:
    members = _members()
    with torch.no_grad():
        members[1].normaliser.feature_mean.add_(1.0)
    with pytest.raises(ValueError, match="normaliser.feature_mean differs"):
        merge(members)
    with pytest.raises(ValueError, match="model.cell=lstm"):
        merge(_members(k=2, cell="lstm"))


def test_a_merged_model_exports_with_parity_and_streams_chunked_as_whole(tmp_path: Path) -> None:
    from tests.helpers import exported_runtime
    from training.config import ResolvedConfig

    merged = merge(_members(num_layers=2))
    config = ResolvedConfig.from_dict({"model": merged.config.model_dump(),
                                       "optim": {"batch_size": 4, "max_epochs": 1, "final_fit": True}})
    checkpoint = tmp_path / "checkpoint.pt"
    Checkpoint.of(merged, config, feature_names=["a", "b", "c"], label_names=list("wxyz"),
                  max_train_length=20, data_source="test", epoch=1, ragged=False).save(checkpoint)
    runtime = exported_runtime(checkpoint, tmp_path / "models", "ensemble")
    assert runtime.manifest.streaming.supported
    sequence = np.random.default_rng(1).normal(size=(17, 3)).astype(np.float32)
    whole = runtime.predict(sequence[None])[0]
    with torch.no_grad():
        expected = merged.predict(torch.as_tensor(sequence[None]))[0][0].numpy()
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    state = None
    for chunk in (sequence[:5], sequence[5:6], sequence[6:]):
        result = compute_now(runtime, [chunk], None if state is None else state[None])
        answer, state = result.outputs[0], result.states[0]
    assert np.abs(answer - whole).max() <= TOLERANCE


def test_auto_members_only_where_few_series_per_output_and_as_many_as_fit_the_budget() -> None:
    few = wanted_members("classification", 104, 52, True)
    assert few == (True, "2.0 training series per class")
    assert wanted_members("classification", 67, 2, True)[0] is False  # make run's set
    assert wanted_members("classification", 36, 3, True)[0] is True  # ArrowHead: 12 per class
    assert wanted_members("classification", 200, 6, True)[0] is False  # OSULeaf: 33 per class
    assert wanted_members("forecast", 1378, 6, True) == (True, "forecast trained as a final fit on 1378 "
                                                         "windows")  # windows cut from 181 series
    assert wanted_members("regression", 1378, 1, True) == (True, "regression trained as a final fit on "
                                                           "1378 series")
    assert choose_members("auto", wanted_members("regression", 74, 1, False), None, 1.0, 120.0) == (
        1, "optim.members=1 (auto: regression whose correction to its baseline is shrunk on the validation "
        "series: one model)")
    assert wanted_members("tagging", 10, 3, True)[0] is False
    assert choose_members("auto", few, None, 30.0, 120.0) == (
        MAX_MEMBERS, f"optim.members={MAX_MEMBERS} (auto: 2.0 training series per class; {MAX_MEMBERS} "
        "members fit the 120 s the budget leaves)")
    assert choose_members("auto", few, None, 50.0, 120.0)[0] == 2
    k, line = choose_members("auto", few, None, 70.0, 120.0)
    assert k == 1 and "one model's run takes ~70 s of the 120 s the budget leaves" in line
    assert choose_members("auto", few, None, 30.0, -5.0) == (  # the budget already spent
        1, "optim.members=1 (auto: 2.0 training series per class, but one model's run takes ~30 s of the 0 s "
        "the budget leaves)")
    assert choose_members("auto", few, "torchrun", None, 120.0) == (
        1, "optim.members=1 (auto: torchrun: one model)")
    assert choose_members(4, few, None, None, 120.0) == (4, "")
    with pytest.raises(ValueError, match=r"optim.members=2: data.sharded trains one model"):
        choose_members(2, few, "data.sharded", None, 120.0)


ENSEMBLE = ["model.hidden_size=8", "optim.members=2", "optim.time_budget=null", "optim.plots=false",
            "optim.tensorboard=false"]


def _train_command(run_dir: Path, epochs: int, *extra: str) -> list[str]:
    sets = [arg for item in [*ENSEMBLE, f"optim.max_epochs={epochs}"] for arg in ("--set", item)]
    return [sys.executable, "-m", "gru_cli", "train", "--name", "e", "--run-dir", str(run_dir),
            "--no-progress", *sets, *extra]


def test_an_ensemble_run_checkpoints_the_merged_model_and_resumes_member_by_member(tmp_path: Path) -> None:
    """Members run one after another in members/<i>/; the run's checkpoint is their merge and its test
    metrics are the merged model's; killed during the second member and resumed (a fresh process), the
    first is reused and the second resumes: bit-identical to an uninterrupted run."""
    epochs = 40
    whole = tmp_path / "whole"
    result = fit(load_config(None, ["name=e", f"run_dir={whole}", "progress=false", *ENSEMBLE,
                                    f"optim.max_epochs={epochs}"]))
    checkpoint = Checkpoint.load(result.checkpoint)
    assert checkpoint.config.model.hidden_size == 16 and checkpoint.config.optim.members == 2
    members = [Checkpoint.load(whole / "e" / "members" / str(i) / "checkpoint.pt").model() for i in (0, 1)]
    data = load_data(checkpoint.config.data)
    assert result.test_metrics["accuracy"] == evaluate(checkpoint.model(), data.test, data)["accuracy"]
    assert set(result.test_metrics["members"]) == {"0", "1"}
    assert "## Ensemble: 2 members" in (whole / "e" / "report.md").read_text()
    x = torch.as_tensor(data.test.X[:5])
    with torch.no_grad():
        mean = (members[0](x)[0] + members[1](x)[0]) / 2
        assert torch.allclose(checkpoint.model()(x)[0], mean, atol=1e-5)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(killed, epochs), cwd=Path(__file__).parents[2],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = killed / "e" / "members" / "1" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (second.exists() and second.read_text().strip()) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before its second member's first epoch was seen"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "e" / "checkpoint.pt").exists(), "the kill landed after the merge"
    subprocess.run(_train_command(killed, epochs, "--resume"), cwd=Path(__file__).parents[2], check=True,
                   capture_output=True)
    resumed = Checkpoint.load(killed / "e" / "checkpoint.pt")
    assert all(torch.equal(checkpoint.state_dict[k], resumed.state_dict[k]) for k in checkpoint.state_dict)
    assert resumed.test_metrics == checkpoint.test_metrics
