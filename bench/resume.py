"""Resume is bit-identical for both GRU variants: train uninterrupted, then SIGKILL the same run at random
moments (a random epoch, a random point inside it), `--resume`, and compare the final checkpoints tensor by
tensor (torch.equal) and metrics.jsonl line by line.

    python -m bench.resume --moments 3 [--epochs 25] [--seed 0]

Every killed and resumed run is a real `gru train` subprocess (a fresh process, as after a crash).
Writes the raw results to bench/results/resume.json.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from training.checkpoint import Checkpoint
from training.config import load_config
from training.loop import fit

# Tiny but complete: two layers with dropout and crops (the torch RNG state matters too), no early stop.
SETTINGS = ["model.hidden_size=16", "model.num_layers=2", "model.dropout=0.2", "optim.crop=0.8",
            "optim.patience=1000", "optim.learning_rate=0.005", "optim.tensorboard=false",
            "optim.plots=false"]
VARIANTS = {"after": ["model.reset=after"], "before": ["model.reset=before"]}


@dataclass
class Outcome:
    variant: str
    killed_after_epochs: int  # epochs completed (in metrics.jsonl) when the SIGKILL landed
    tensors_equal: int
    tensors: int
    metrics_equal: bool
    test_metrics_equal: bool

    @property
    def identical(self) -> bool:
        return self.tensors_equal == self.tensors and self.metrics_equal and self.test_metrics_equal


def settings(variant: str, epochs: int) -> list[str]:
    # no time budget: the epochs must not depend on how fast the machine was at the start
    return [*SETTINGS, *VARIANTS[variant], f"optim.max_epochs={epochs}", "optim.time_budget=null"]


def train_command(run_dir: Path, variant: str, epochs: int, *extra: str) -> list[str]:
    sets = [arg for item in settings(variant, epochs) for arg in ("--set", item)]
    return [sys.executable, "-m", "gru_cli", "train", "--name", "r", "--run-dir", str(run_dir),
            "--no-progress", *sets, *extra]


def epochs_logged(run_dir: Path) -> int:
    path = run_dir / "r" / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def without_timing(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.open()]


def kill_during(run_dir: Path, variant: str, epochs: int, epoch: int, rng: random.Random) -> int:
    """Start the run, wait until `epoch` epochs are logged, then SIGKILL it a random fraction of an epoch
    later (most of the time is inside an epoch). Returns the epochs completed at the kill."""
    process = subprocess.Popen(train_command(run_dir, variant, epochs), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while epochs_logged(run_dir) < epoch and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    started = time.monotonic()
    while epochs_logged(run_dir) < epoch + 1 and time.monotonic() - started < 0.05 + rng.random() * 0.2:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return epochs_logged(run_dir)


def compare(variant: str, whole: Path, resumed: Path, killed_at: int) -> Outcome:
    a, b = Checkpoint.load(whole / "r" / "checkpoint.pt"), Checkpoint.load(resumed / "r" / "checkpoint.pt")
    equal = sum(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    same_log = without_timing(whole / "r" / "metrics.jsonl") == \
        without_timing(resumed / "r" / "metrics.jsonl")
    same_test = a.test_metrics == b.test_metrics and a.epoch == b.epoch
    return Outcome(variant, killed_at, equal, len(a.state_dict), same_log, same_test)


def check(variant: str, root: Path, epochs: int, moments: int, rng: random.Random) -> list[Outcome]:
    """One uninterrupted run (in this process), then `moments` runs killed at random epochs and resumed,
    each in a fresh process."""
    whole = root / f"{variant}-whole"
    fit(load_config(None, ["name=r", f"run_dir={whole}", "progress=false", *settings(variant, epochs)]))
    outcomes = []
    for i in range(moments):
        killed = root / f"{variant}-killed-{i}"
        killed_at = kill_during(killed, variant, epochs, rng.randint(1, epochs - 2), rng)
        if not 0 < killed_at < epochs:
            raise RuntimeError(f"the kill landed outside the run (after {killed_at} of {epochs} epochs)")
        subprocess.run(train_command(killed, variant, epochs, "--resume"), check=True, capture_output=True)
        outcomes.append(compare(variant, whole, killed, killed_at))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moments", type=int, default=3, help="kills per variant (default 3)")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, help="for the kill moments (default: random)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            outcomes += check(variant, Path(tmp), args.epochs, args.moments, rng)
    print(f"kill moments seed {seed}; {args.epochs} epochs; settings {' '.join(SETTINGS)}")
    print("| reset | killed after epoch | tensors torch.equal | metrics.jsonl equal | test metrics equal |")
    print("|---|---|---|---|---|")
    for o in outcomes:
        print(f"| {o.variant} | {o.killed_after_epochs} | {o.tensors_equal}/{o.tensors} | {o.metrics_equal} "
              f"| {o.test_metrics_equal} |")
    results = Path("bench/results")
    results.mkdir(parents=True, exist_ok=True)
    (results / "resume.json").write_text(json.dumps({"seed": seed, "outcomes": [asdict(o) for o in outcomes]},
                                                    indent=2))
    sys.exit(0 if all(o.identical for o in outcomes) else 1)


if __name__ == "__main__":
    main()
