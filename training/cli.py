"""`gru train`: a config file plus `section.key=value` overrides -> a trained checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or TOML file (sections: data, model, optim)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.seed=1 (repeatable)")
    parser.add_argument("--dataset", help="shortcut for --set data.dataset=NAME "
                        "(ItalyPowerDemand, GunPoint, ACSF1, JapaneseVowels, Airline, M1Yearly, "
                        "SyntheticRegimes, or 'file')")
    parser.add_argument("--name", help="run name: the run folder is <run_dir>/<name> (default: a new one, "
                        "<dataset>-<date>-<time>)")
    parser.add_argument("--run-dir", help="folder for run folders (default: runs)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="shortcut for --set optim.time_budget=SECONDS: the whole run's seconds on this "
                        "machine (default 120; 'none' via --set optim.time_budget=null)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from <run_dir>/<name>/last.pt (same config)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run folder that holds a run: the old folder is deleted first")
    parser.add_argument("--mlflow", metavar="URI",
                        help="log the run to this MLflow tracking server (default: MLFLOW_TRACKING_URI)")


def overrides_from(args: argparse.Namespace) -> list[str]:
    shortcuts = {"data.dataset": args.dataset, "name": args.name, "run_dir": args.run_dir,
                 "optim.seed": args.seed, "optim.max_epochs": args.max_epochs,
                 "optim.time_budget": args.time_budget}
    overrides = [f"{k}={v}" for k, v in shortcuts.items() if v is not None] + args.overrides
    if args.no_progress:
        overrides.append("progress=false")
    return overrides


def name_the_run(config: TrainConfig) -> TrainConfig:
    """The config, named: a run given no name (no --name, none in the config file) gets a folder of its
    own, never another run's: <dataset or file>-<date>-<time>, said on stdout."""
    if "name" in config.model_fields_set:
        return config
    if "WORLD_SIZE" in os.environ:  # torchrun: each process would pick its own time
        raise ValueError("under torchrun give the run a --name: every process must use the same run folder")
    data = config.data
    source = Path(data.path).stem if data.dataset == "file" and data.path else data.dataset
    name = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', source)}-{time.strftime('%Y%m%d-%H%M%S')}"
    unique, taken = name, 1
    while (Path(config.run_dir) / unique).exists():  # two runs started in the same second
        taken += 1
        unique = f"{name}-{taken}"
    print(f"run name: {unique} (no --name given); run folder {Path(config.run_dir) / unique}")
    return config.with_values({"name": unique})


def check_run_folder(folder: Path, resume: bool, overwrite: bool = False) -> None:
    """Before the data is read and the model planned: a run folder that cannot be one fails at once, and
    so does one that holds a run already, unless resumed or overwritten (deleted here). Before, `--name a`
    given again (with another dataset) wrote over run a's checkpoint and kept its ensemble members,
    tensorboard events and cross-validation runs beside the new run's."""
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"run folder {folder}: {part} is a file, not a folder; choose another --name or "
                             "--run-dir")
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite deletes it: pass one of them")
    if resume and not (folder / "config.yaml").exists():  # before: a misspelt --name trained a new run
        raise ValueError(f"--resume: run folder {folder} holds no run to continue; check --name and "
                         "--run-dir, or drop --resume to start a new run")
    if not resume and (folder / "config.yaml").exists():
        if not overwrite:
            raise ValueError(f"run folder {folder} holds a run already; choose another --name, continue it "
                             "with --resume (same settings), or replace it with --overwrite")
        shutil.rmtree(folder)


def run(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()  # the budget counts importing torch (4-7 s) too: a user waits for it

    from training.config import load_config
    from training.loop import fit

    if args.mlflow:
        os.environ["MLFLOW_TRACKING_URI"] = args.mlflow
    config = load_config(args.config, overrides_from(args))
    if args.resume and "name" not in config.model_fields_set:
        raise ValueError("--resume continues a named run: give its --name (the folder under runs/)")
    config = name_the_run(config)
    check_run_folder(Path(config.run_dir) / config.name, args.resume, args.overwrite)
    try:
        result = fit(config, resume=args.resume, started=started)
    except KeyboardInterrupt:  # Ctrl-C: before, a 40-line traceback ending in torch's autograd engine
        print(f"gru train: interrupted; to continue from the last finished epoch, run the same command with "
              f"--name {config.name} --resume", file=sys.stderr)
        return 130
    if result.test_metrics:  # under torchrun only rank 0 evaluates and reports
        budget = config.optim.time_budget
        print(f"best epoch {result.best_epoch}; checkpoint {result.checkpoint}; "
              f"{time.perf_counter() - started:.0f} s (time budget {f'{budget:g} s' if budget else 'none'})")
        print("test metrics: " + json.dumps(result.test_metrics))
        for line in result.diagnosis:
            print(f"diagnosis: {line}")
    return 0
