"""`gru tune`: hyperparameter search with Optuna over hidden size, layers, dropout, learning rate, batch
size, optimiser and gradient clip. Each trial is a real `fit` that reports its validation loss per epoch;
a median pruner stops trials that fall behind. A seeded TPE sampler plus deterministic CPU training make
a search reproducible. The best trial's config is written as YAML for `gru train --config`."""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig, load_config, save_config


@dataclass
class TuneResult:
    best_config: TrainConfig
    best_value: float  # validation loss of the best trial
    best_params: dict[str, Any]
    config_path: Path
    trials: list[dict[str, Any]]  # number, state, value, params


def suggest(trial: Any, base: TrainConfig) -> TrainConfig:
    config = copy.deepcopy(base)
    m, o = config.model, config.optim
    m.hidden_size = trial.suggest_categorical("hidden_size", [16, 32, 64, 128])
    m.num_layers = trial.suggest_int("num_layers", 1, 3)
    m.dropout = trial.suggest_float("dropout", 0.0, 0.5)
    m.bidirectional = trial.suggest_categorical("bidirectional", [False, True])
    o.learning_rate = trial.suggest_float("learning_rate", 1e-4, 2e-2, log=True)
    o.batch_size = trial.suggest_categorical("batch_size", [8, 16, 32, 64])
    o.optimizer = trial.suggest_categorical("optimizer", ["adamw", "adam", "sgd", "rmsprop"])
    o.grad_clip = trial.suggest_float("grad_clip", 0.1, 10.0, log=True)
    return config


def tune(base: TrainConfig, trials: int, output: Path | None = None, sampler_seed: int = 0) -> TuneResult:
    import optuna

    from training.loop import fit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    )
    trial_root = Path(base.run_dir) / base.name / "trials"

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, base)
        config.run_dir, config.name, config.progress = str(trial_root), f"trial_{trial.number:03d}", False
        config.optim.plots = config.optim.tensorboard = False
        best = float("inf")

        def report(epoch: int, record: dict[str, Any]) -> None:
            nonlocal best
            best = min(best, record["val_loss"])
            trial.report(record["val_loss"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {record['val_loss']:.4f} at epoch {epoch}")

        fit(config, on_epoch=report)
        return best

    study.optimize(objective, n_trials=trials)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise ValueError("every trial was pruned or failed; raise --trials or optim.max_epochs")
    best_config = suggest(optuna.trial.FixedTrial(study.best_params), base)
    path = output or Path(base.run_dir) / base.name / "best_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_config(best_config, path)
    summary = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
               for t in study.trials]
    (path.parent / "tune_trials.json").write_text(json.dumps(summary, indent=2))
    return TuneResult(best_config, float(study.best_value), dict(study.best_params), path, summary)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.cli import add_arguments as train_arguments

    train_arguments(parser)
    parser.add_argument("--trials", type=int, default=20, help="number of Optuna trials (default 20)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    parser.add_argument("--output", type=Path,
                        help="where to write the best config (default: <run_dir>/<name>/best_config.yaml)")


def run(args: argparse.Namespace) -> int:
    from training.cli import overrides_from

    base = load_config(args.config, overrides_from(args))
    result = tune(base, args.trials, args.output, args.sampler_seed)
    states = [t["state"] for t in result.trials]
    print(f"{len(states)} trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned")
    print(f"best validation loss {result.best_value:.4f} with {json.dumps(result.best_params)}")
    print(f"best config: {result.config_path}  (gru train --config {result.config_path})")
    return 0
