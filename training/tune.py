"""`gru tune`: hyperparameter search with Optuna over hidden size, layers, dropout, learning rate, batch
size, optimiser and gradient clip. Each trial is a real `fit` that reports its validation loss per epoch;
a median pruner stops trials that fall behind. A seeded TPE sampler plus deterministic CPU training make
a search reproducible. `--timeout` bounds the whole search. `--storage URL --study NAME` keeps the study in
a database or journal file that several processes or machines share: each runs trials of the one search.
Each trial prints one line as it ends. The best trial's config is written as YAML for
`gru train --config`: the searched values and what the base config set, without what the data decides
or what only the search used (run name, the trials' epoch budget)."""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from training.config import TrainConfig, load_config
from training.publish import write_atomic

HEARTBEAT_S = 60  # Optuna's documented example: a heartbeat a minute, failed after two silent ones
# Filled in from the data by every `gru train` (defaults.from_data): never written in a tuned config.
FROM_DATA = {"model": ("input_size", "task", "output_size", "window_scaling", "seasonal_skip")}
# The search's own settings: trials' run folders and epoch budget, not chosen by it.
SEARCH_ONLY = {"": ("name", "run_dir", "progress"),
               "optim": ("max_epochs", "plots", "tensorboard", "final_fit")}


@dataclass
class TuneResult:
    best_config: TrainConfig
    best_value: float  # validation loss of the best trial
    best_params: dict[str, Any]
    config_path: Path
    trials: list[dict[str, Any]]  # number, state, value, params


def suggest(trial: Any, base: TrainConfig) -> TrainConfig:
    return base.with_values({
        "model.hidden_size": trial.suggest_categorical("hidden_size", [16, 32, 64, 128]),
        "model.num_layers": trial.suggest_int("num_layers", 1, 3),
        "model.dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "model.bidirectional": trial.suggest_categorical("bidirectional", [False, True]),
        "optim.learning_rate": trial.suggest_float("learning_rate", 1e-4, 2e-2, log=True),
        "optim.batch_size": trial.suggest_categorical("batch_size", [8, 16, 32, 64]),
        "optim.optimizer": trial.suggest_categorical("optimizer", ["adamw", "adam", "sgd", "rmsprop"]),
        "optim.grad_clip": trial.suggest_float("grad_clip", 0.1, 10.0, log=True),
    })


def tune(base: TrainConfig, trials: int | None, output: Path | None = None, sampler_seed: int = 0,
         timeout: float | None = None, storage: str | None = None, study_name: str | None = None,
         on_trial: Any = None, heartbeat: int = HEARTBEAT_S) -> TuneResult:
    """Run `trials` trials, or as many as fit in `timeout` seconds (a trial still running then is
    pruned at the end of its epoch), whichever ends first. With `storage` the study is shared: it is
    created or joined by name, and `trials` counts the finished trials of every process; in a database,
    a trial whose process sent no `heartbeat` (seconds) for two of them is failed by another process.
    on_trial(study, trial) is called as each trial ends."""
    with one_search(Path(base.run_dir) / base.name, storage, study_name):
        return _search(base, trials, output, sampler_seed, timeout, storage, study_name, on_trial, heartbeat)


@contextmanager
def one_search(folder: Path, storage: str | None, study_name: str | None) -> Iterator[None]:
    """Only the processes of one search write trials into `folder` (trial_000, ...): a search in memory
    alone, a shared study with its own processes. Each holds a lock file there for its life (flock: the
    kernel releases it on exit, kill -9 included): exclusive in memory, shared by the study's processes.
    Before (round 11), two searches with one --name wrote the same trial folders, whichever last."""
    import fcntl
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    key = "memory" if storage is None else hashlib.sha256(str(study_name).encode()).hexdigest()[:16]
    own = open(folder / f".tune-{key}.lock", "a")  # noqa: SIM115 - held until the search ends
    try:
        try:
            fcntl.flock(own, fcntl.LOCK_SH if storage else fcntl.LOCK_EX | fcntl.LOCK_NB)
            others = [p for p in folder.glob(".tune-*.lock") if p.name != Path(own.name).name and _held(p)]
        except BlockingIOError:
            others = [Path(own.name)]
        if others:
            raise ValueError(f"{folder}: another gru tune is running a search whose trials go there; give "
                             "this one another --name, or run both as one search: --storage URL --study "
                             "NAME in each")
        yield
    finally:
        own.close()


def _held(lock: Path) -> bool:
    """Whether a process holds `lock` (a probe: exclusive, not waiting, released at once)."""
    import fcntl

    try:
        with open(lock) as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except FileNotFoundError:
        pass
    return False


def _search(base: TrainConfig, trials: int | None, output: Path | None, sampler_seed: int,
            timeout: float | None, storage: str | None, study_name: str | None, on_trial: Any,
            heartbeat: int) -> TuneResult:
    import optuna

    from training.loop import fit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Processes that share a study must not draw the same random start-up trials: seed each its own.
    seed = sampler_seed if storage is None else sampler_seed + os.getpid()
    with storage_refusals(storage):
        study = optuna.create_study(
            storage=open_storage(storage, heartbeat), study_name=study_name,
            load_if_exists=storage is not None,
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
        )
    trial_root = Path(base.run_dir) / base.name / "trials"
    deadline = time.monotonic() + timeout if timeout else float("inf")

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, base).with_values({
            "run_dir": str(trial_root), "name": f"trial_{trial.number:03d}", "progress": False,
            "optim.plots": False, "optim.tensorboard": False,
            "optim.final_fit": False,  # trials are compared on the held-out validation split
            "optim.members": 1})  # of one model each: its epochs are what the pruner reads
        best = float("inf")

        def report(epoch: int, record: dict[str, Any]) -> None:
            nonlocal best
            best = min(best, record["val_loss"])
            trial.report(record["val_loss"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {record['val_loss']:.4f} at epoch {epoch}")
            if time.monotonic() > deadline:
                raise optuna.TrialPruned(f"--timeout reached at epoch {epoch}")

        fit(config, on_epoch=report, quiet=True)
        return best

    callbacks = [on_trial] if on_trial else []
    if storage is not None and trials is not None:  # stop once the shared study holds `trials` finished
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        callbacks.insert(0, optuna.study.MaxTrialsCallback(trials, states=finished))
    with storage_refusals(storage):
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=callbacks)
        fail_stale_trials(study)  # Optuna checks only as a trial starts: a process killed since, too
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise ValueError("every trial was pruned or failed; raise --trials, --timeout or optim.max_epochs")
    best_config = suggest(optuna.trial.FixedTrial(study.best_params), base)
    path = output or Path(base.run_dir) / base.name / "best_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# gru tune: best of {len(study.trials)} trials (validation loss {study.best_value:.4f}), "
              f"each at most {base.optim.max_epochs} epochs.\n# The data sets input_size, task, output_size, "
              "window_scaling and seasonal_skip; optim.max_epochs and the run name are yours to set.\n")
    clean = clean_config(best_config, set(study.best_params))
    # Processes sharing a study finish at different times: each writes the study's best so far, whole.
    write_atomic(path, (header + yaml.safe_dump(clean, sort_keys=False)).encode())
    summary = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
               for t in study.trials]
    write_atomic(path.parent / "tune_trials.json", json.dumps(summary, indent=2).encode())
    return TuneResult(best_config, float(study.best_value), dict(study.best_params), path, summary)


def open_storage(url: str | None, heartbeat: int = HEARTBEAT_S) -> Any:
    """None (in memory), an RDB URL (sqlite:///study.db, postgresql://...) or journal:PATH, Optuna's
    append-only journal file (a shared file system without a database). In a database each running trial
    records a heartbeat every `heartbeat` seconds; one silent for two of them (its process killed, its
    machine gone) is failed by the next process that starts a trial or ends its search. Before (round 11)
    the heartbeat was off and a `kill -9`ed trial stayed RUNNING for good (journals have none: it still
    does there)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from sqlalchemy.exc import IntegrityError, OperationalError

    if url is None:
        return None
    if url.startswith("journal:"):
        path = url.removeprefix("journal:").removeprefix("//")
        if not path:
            raise ValueError("--storage journal:PATH needs a file, e.g. journal:./study.log")
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    for attempt in range(1, 6):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna, since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat,
                                                  grace_period=2 * heartbeat,
                                                  heartbeat_stale_trial_callback=partial(said_stopped,
                                                                                         2 * heartbeat))
        except (IntegrityError, OperationalError):  # e.g. another process creating the tables
            if attempt == 5:
                raise
            time.sleep(0.5 * attempt)
    return None


def said_stopped(grace: int, study: Any, trial: Any) -> None:
    """Optuna's call for a trial it failed for want of heartbeats: one line, as each trial's."""
    print(f"trial {trial.number}: failed: its process stopped (no heartbeat for {grace} s: killed, or "
          "its machine gone); the search goes on without it", flush=True)


def fail_stale_trials(study: Any) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextmanager
def storage_refusals(url: str | None) -> Iterator[None]:
    """A storage that cannot be opened or written is one error naming --storage and the forms it takes.
    Before (round 10): a traceback for a file that is not a database, a read-only one, a URL SQLAlchemy
    cannot parse or whose driver is missing; a journal that is not one said only "Expecting value"."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, StorageInternalError, ImportError, json.JSONDecodeError) as exc:
        reason = str(exc.__cause__ if isinstance(exc, StorageInternalError) and exc.__cause__ else exc)
        raise ValueError(f"--storage {url}: {reason.splitlines()[0][:300]}; give sqlite:///PATH.db (a file "
                         "SQLite can write), postgresql://user@host/db or mysql+pymysql://... (with its "
                         "driver installed), or journal:PATH (a journal file gru tune wrote)") from None


def clean_config(config: TrainConfig, searched: set[str]) -> dict[str, Any]:
    """What a tuned config says: the searched values, the dataset, and what else the base config set to
    other than the defaults, without the fields in FROM_DATA and SEARCH_ONLY."""
    chosen, defaults = config.to_dict(), TrainConfig().to_dict()
    clean: dict[str, Any] = {}
    for key, value in chosen.items():
        if isinstance(value, dict):
            dropped = FROM_DATA.get(key, ()) + SEARCH_ONLY.get(key, ())
            section = {k: v for k, v in value.items() if k not in dropped
                       and (k in searched or f"{key}.{k}" == "data.dataset" or v != defaults[key][k])}
            if section:
                clean[key] = section
        elif key not in SEARCH_ONLY[""] and value != defaults[key]:
            clean[key] = value
    return clean


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.cli import add_arguments as train_arguments

    train_arguments(parser)
    parser.add_argument("--trials", type=int,
                        help="number of Optuna trials (default 20; with --timeout: as many as fit)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="time budget of the whole search; a trial still running then stops")
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    parser.add_argument("--output", type=Path,
                        help="where to write the best config (default: <run_dir>/<name>/best_config.yaml)")
    parser.add_argument("--storage", metavar="URL",
                        help="share the study between processes or machines: an Optuna RDB URL "
                        "(sqlite:///study.db, postgresql://user@host/db) or journal:PATH (a journal file); "
                        "--trials then counts every process's trials")
    parser.add_argument("--heartbeat", type=int, default=HEARTBEAT_S, metavar="SECONDS",
                        help=f"with a database --storage: each running trial's heartbeat (default "
                        f"{HEARTBEAT_S}); a trial silent for two (its process killed) is marked FAIL by "
                        "another process")
    parser.add_argument("--study", metavar="NAME",
                        help="the study's name in --storage; processes given the same one run one search "
                        "(default run name: NAME)")


def print_trial(study: Any, trial: Any) -> None:
    """One line per finished trial: its number, outcome and the best so far."""
    import optuna

    state = trial.state
    if state == optuna.trial.TrialState.COMPLETE:
        outcome = f"validation loss {trial.value:.4f}"
    elif state == optuna.trial.TrialState.PRUNED:
        last = trial.intermediate_values
        outcome = f"pruned at epoch {max(last)} (validation loss {last[max(last)]:.4f})" if last else "pruned"
    else:
        outcome = state.name.lower()
    try:
        best = f"best so far {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:  # no trial completed yet
        best = "no trial completed yet"
    print(f"trial {trial.number}: {outcome}; {best}; {json.dumps(trial.params)}", flush=True)


def run(args: argparse.Namespace) -> int:
    from training.cli import name_the_run, overrides_from

    if args.study and not args.storage:
        raise ValueError("--study names a study in --storage: give --storage too, e.g. sqlite:///study.db")
    if args.mlflow:
        raise ValueError("gru tune's trials are not logged to MLflow: train the best config with "
                         "gru train --mlflow URI")
    # before (round 10): --trials 0 or -3, --timeout 0 or -1 ran and said "every trial was pruned or failed"
    if args.trials is not None and args.trials < 1:
        raise ValueError(f"--trials {args.trials}: give 1 or more (or leave it out: 20, or as many as fit "
                         "in --timeout)")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout {args.timeout:g}: give the search's time budget in seconds, above 0")
    if args.heartbeat < 1:
        raise ValueError(f"--heartbeat {args.heartbeat}: give 1 or more seconds")
    base = load_config(args.config, overrides_from(args))
    if args.study and "name" not in base.model_fields_set:
        base = base.with_values({"name": args.study})  # every process of the study: one run folder
    base = name_the_run(base)
    trials = args.trials if args.trials is not None else (None if args.timeout else 20)
    result = tune(base, trials, args.output, args.sampler_seed, args.timeout, args.storage, args.study,
                  on_trial=print_trial, heartbeat=args.heartbeat)
    states = [t["state"] for t in result.trials]
    print(f"{len(states)} trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned")
    print(f"best validation loss {result.best_value:.4f} with {json.dumps(result.best_params)}")
    print(f"best config: {result.config_path}  (gru train --config {result.config_path})")
    return 0
