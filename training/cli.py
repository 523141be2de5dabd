"""`gru train`: a config file plus `section.key=value` overrides -> a trained checkpoint."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or TOML file (sections: data, model, optim)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.seed=1 (repeatable)")
    parser.add_argument("--dataset", help="shortcut for --set data.dataset=NAME "
                        "(ItalyPowerDemand, GunPoint, ACSF1, JapaneseVowels, Airline, M1Yearly, "
                        "SyntheticRegimes, or 'file')")
    parser.add_argument("--name", help="run name: the run folder is <run_dir>/<name>")
    parser.add_argument("--run-dir", help="folder for run folders (default: runs)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="shortcut for --set optim.time_budget=SECONDS: the whole run's seconds on this "
                        "machine (default 120; 'none' via --set optim.time_budget=null)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from <run_dir>/<name>/last.pt (same config)")


def overrides_from(args: argparse.Namespace) -> list[str]:
    shortcuts = {"data.dataset": args.dataset, "name": args.name, "run_dir": args.run_dir,
                 "optim.seed": args.seed, "optim.max_epochs": args.max_epochs,
                 "optim.time_budget": args.time_budget}
    overrides = [f"{k}={v}" for k, v in shortcuts.items() if v is not None] + args.overrides
    if args.no_progress:
        overrides.append("progress=false")
    return overrides


def run(args: argparse.Namespace) -> int:
    import time

    from training.config import load_config
    from training.loop import fit

    started = time.perf_counter()
    config = load_config(args.config, overrides_from(args))
    result = fit(config, resume=args.resume)
    if result.test_metrics:  # under torchrun only rank 0 evaluates and reports
        budget = config.optim.time_budget
        print(f"best epoch {result.best_epoch}; checkpoint {result.checkpoint}; "
              f"{time.perf_counter() - started:.0f} s (time budget {f'{budget:g} s' if budget else 'none'})")
        print("test metrics: " + json.dumps(result.test_metrics))
        for line in result.diagnosis:
            print(f"diagnosis: {line}")
    return 0
