"""fit(): seed -> data -> defaults from the data -> model -> AdamW on a one-cycle schedule with
augmentation and gradient clipping -> checkpoint -> test metrics -> plots and report. Deterministic on CPU
under a fixed seed. Data-parallel under torchrun, on CPU or CUDA, in fp32/bf16/fp16 (distributed.py).

The recipe (docs/guides/model.md): by default the shipped model is trained on every training series (the
validation split included) for the whole schedule, and its last epoch is kept: no epoch is picked on a
handful of held-out series. `optim.final_fit=false` holds the validation split out instead, keeps the
epoch with the best validation loss and stops early after `optim.patience` epochs (what `gru tune`
compares trials on)."""

from __future__ import annotations

import copy
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from service.heads import Head
from training import defaults, distributed, ensemble, heads, recurrence, selection
from training.baselines import baseline_forecasts, with_baselines
from training.checkpoint import Checkpoint
from training.config import ResolvedConfig, ResolvedOptimConfig, TrainConfig, save_config
from training.data import SequenceData, Split, load_data
from training.data.dataset import PAD_LABEL
from training.diagnose import baseline_name, diagnose, naive_ahead, test_labels
from training.linear import fit_linear_path
from training.mlflow_run import MlflowRun, configured
from training.model import GRUModel
from training.recipe import (
    augment,
    crop,
    end_reserve,
    make_schedule,
    may_stop,
    mixup,
    plan_epochs,
    soft_targets,
    time_warp,
)
from training.resume import Progress, load_last, save_last, saved_config
from training.shrink import shrink_to_baseline
from training.tracking import Tracker, finish_run

EpochHook = Callable[[int, dict[str, Any]], None]  # (epoch, the metrics.jsonl record)


@dataclass
class FitResult:
    run_dir: Path
    checkpoint: Path
    test_metrics: dict[str, Any]
    best_epoch: int
    diagnosis: list[str] = field(default_factory=list)  # underfits / memorises, with what to try


def seed_everything(seed: int, threads: int, device: torch.device | None = None) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    # CUDA: some kernels (cuDNN GRU backward) have no deterministic form; warn instead of failing
    torch.use_deterministic_algorithms(True, warn_only=device is not None and device.type == "cuda")


def fit(config: TrainConfig, on_epoch: EpochHook | None = None, resume: bool = False,
        quiet: bool = False, started: float | None = None) -> FitResult:
    """Train, keep the best epoch, evaluate on test. Under torchrun every rank trains its shard of each
    batch; only rank 0 writes files and returns test metrics (others return empty ones). quiet (a search
    trial): print nothing of what the run chose, log nothing to MLflow. started: when the time budget's
    clock started (time.perf_counter(); `gru train`: before importing torch, whose 4-7 s put runs at
    122-127 s against their 120); None: now."""
    begun = time.perf_counter()
    recurrence.compiled()  # the GRU's C++ loop, built once per machine: not counted in the budget
    started = (begun if started is None else started) + time.perf_counter() - begun
    ctx = distributed.setup(config.optim.device)
    try:
        return _fit(config, ctx, on_epoch, resume, quiet, started)
    finally:
        distributed.teardown()


def _fit(config: TrainConfig, ctx: distributed.Context, on_epoch: EpochHook | None,
         resume: bool, quiet: bool, started: float, data: SequenceData | None = None) -> FitResult:
    """`data`: already loaded for this config (an ensemble's members read it once)."""
    seed_everything(config.optim.seed, config.optim.threads, ctx.device)
    data = load_data(config.data) if data is None else data
    resolved, chosen = defaults.resolve(config, data)
    config, cropped = _crop(config, resolved, data, ctx, started, resume)
    config, data, windowed, warm = _window(config, data, ctx, started, resume)
    if cropped or windowed:  # what was chosen with the comparison's winner
        resolved, chosen = defaults.resolve(config, data)
        chosen = cropped + windowed + chosen
    if data.sharded:  # each rank chose from its own shard: take rank 0's choices
        resolved, chosen = distributed.agree((resolved, chosen), ctx)
    train = defaults.training_split(data, resolved.optim.final_fit)
    model = GRUModel(resolved.model)
    targets = train.y if model.task_head.values else None
    model.normaliser.fit(train.X, targets, lengths=train.lengths)
    if data.sharded:  # each rank saw only its series: statistics over all of them
        distributed.sync_normaliser(model.normaliser, train.X, targets, ctx)
    if warm[1]:
        chosen.append(_warm_start(model, *warm))
    if resolved.model.linear_steps:  # fitted on every training series, as the ridge baseline is
        chosen.append(fit_linear_path(model, defaults.merge(data.train, data.val, data.task)))
    model.to(ctx.device)
    if ctx.is_main:  # made now, so that the time budget counts them
        baseline_forecasts(data)
    run_dir = Path(config.run_dir) / config.name
    members, line = _members(config, model, train, data, resolved, ctx, started, resume)
    resolved = resolved.model_copy(update={"optim": resolved.optim.model_copy(update={"members": members})})
    chosen += [line] if line else []
    if members > 1:
        return _fit_members(config, resolved, data, ctx, resume, started, [*data.notes, *chosen])
    resolved, planned, deadline = distributed.agree(_plan(model, train, data, resolved, ctx, started, run_dir,
                                                          resume), ctx)
    return _run(model, data, train, resolved, ctx, on_epoch, resume, quiet, deadline,
                [*data.notes, *chosen, planned])


def _first_choice(config: TrainConfig, key: str, before: Any, section: str = "optim") -> Any:
    """<section>.<key> as an interrupted run's first start chose it (its config.yaml; `before`: what runs
    from before the setting existed used), or None where that start wrote no config."""
    saved = Path(config.run_dir) / config.name / "config.yaml"
    return yaml.safe_load(saved.read_text())[section].get(key, before) if saved.exists() else None


def _crop(config: TrainConfig, resolved: ResolvedConfig, data: SequenceData, ctx: distributed.Context,
          started: float, resume: bool) -> tuple[TrainConfig, list[str]]:
    """optim.crop "auto", where candidates are compared (training/selection.py): the config with the
    winner, and the line that says why; a resumed run keeps what its first start chose. Each candidate
    trains with the settings `resolved` chose from all the training series."""
    if not selection.compares_crops(config, data, ctx.distributed):
        return config, []
    saved = _first_choice(config, "crop", 1.0) if resume else None
    if saved is not None:
        return (config.with_values({"optim.crop": float(saved)}),
                [f"optim.crop={float(saved):g} (as chosen when the interrupted run started)"])
    run_dir = Path(config.run_dir) / config.name
    base, budget = TrainConfig.from_dict(resolved.to_dict()), config.optim.time_budget
    scores: dict[float, list[tuple[int, dict[str, Any]]]] = {share: [] for share in selection.CANDIDATES}
    begun, parts = time.perf_counter(), selection.folds(data)
    left = None if budget is None else budget - (begun - started)  # each run: an equal part of it
    each = None if left is None else max(1.0, selection.CANDIDATE_SHARE / len(parts) * left)
    for share in selection.CANDIDATES:
        for i, part in enumerate(parts):
            trial = selection.candidate(base, share, i, each, str(run_dir / "selection"))
            result = _fit(trial, ctx, None, False, True, time.perf_counter(), part)
            scores[share].append((len(part.test), result.test_metrics))
    share, line = selection.winner(scores, time.perf_counter() - begun)
    seed_everything(config.optim.seed, config.optim.threads, ctx.device)  # as if nothing had run before
    return config.with_values({"optim.crop": share}), [line]


def _window(config: TrainConfig, data: SequenceData, ctx: distributed.Context, started: float,
            resume: bool) -> tuple[TrainConfig, SequenceData, list[str], tuple[Path | None, str]]:
    """data.window unset for tagging split in time (training/selection.py): the config and data with the
    window length that scored best on the validation steps, the line that says why, and the winning
    candidate's checkpoint the final model starts from with its line (selection.window_checkpoint); a
    resumed run keeps what its first start chose; without a comparison (no final fit, torchrun) the first
    of WIDTHS."""
    if data.recordings is None or config.data.window is not None:
        return config, data, [], (None, "")
    saved = _first_choice(config, "window", None, section="data") if resume else None
    run_dir, budget = Path(config.run_dir) / config.name / "selection", config.optim.time_budget
    if saved is not None:  # under torchrun too, or with another optim.final_fit
        return (config.with_values({"data.window": int(saved)}), selection.with_window(data, int(saved)),
                [f"data.window={int(saved)} (as chosen when the interrupted run started)"],
                selection.window_checkpoint(run_dir, int(saved), data))  # where the first start began
    if not selection.compares_windows(config, data, ctx.distributed):
        why = "under torchrun" if ctx.distributed else "with optim.final_fit=false"
        width = selection.WIDTHS[0]  # what training/data/files.py cut
        return config.with_values({"data.window": width}), data, [
            f"data.window={width} (default: window lengths are compared only in a single process with a "
            f"final fit, not {why}; set data.window to choose)"], (None, "")
    begun = time.perf_counter()
    each = None if budget is None else max(1.0, selection.CANDIDATE_SHARE * (budget - (begun - started)))
    scores = {}
    for width in selection.WIDTHS:  # each resolves its settings from its own windows (their count differs)
        trial = selection.window_candidate(config, width, each, str(run_dir))
        scores[width] = _fit(trial, ctx, None, False, True, time.perf_counter(),
                             selection.window_trial(data, width)).test_metrics
    width, line = selection.window_winner(scores, data, time.perf_counter() - begun)
    seed_everything(config.optim.seed, config.optim.threads, ctx.device)  # as if nothing had run before
    return (config.with_values({"data.window": width}), selection.with_window(data, width), [line],
            selection.window_checkpoint(run_dir, width, data))


def _warm_start(model: GRUModel, checkpoint: Path | None, line: str) -> str:
    """The final model starts from the window comparison's winner where `checkpoint` is one (its weights;
    the normaliser stays fitted on the final training windows); `line` says which start. From a fresh
    start, GunPoint played as recordings (seed 2) stayed at the majority label (0.4907) although its
    winning candidate scored 0.905 on the validation steps."""
    if checkpoint is not None:
        state = {key: value for key, value in Checkpoint.load(checkpoint).state_dict.items()
                 if not key.startswith("normaliser.")}
        model.load_state_dict(state, strict=False)
    return line


def _members(config: TrainConfig, model: GRUModel, train: Split, data: SequenceData, resolved: ResolvedConfig,
             ctx: distributed.Context, started: float, resume: bool) -> tuple[int, str]:
    """optim.members (training/ensemble.py) and the line that says why; a resumed run keeps what its
    first start chose."""
    saved = _first_choice(config, "members", 1) if resume and config.optim.members == "auto" else None
    if saved is not None:
        return int(saved), f"optim.members={saved} (as chosen when the interrupted run started)"
    off = "torchrun" if ctx.distributed else "data.sharded" if data.sharded else None  # gru tune: 1 (tune.py)
    wanted = ensemble.wanted_members(data.task, len(data.train) + len(data.val), data.output_size,
                                     resolved.optim.final_fit)
    seconds = room = None
    budget, setting = resolved.optim.time_budget, config.optim.members
    checked = wanted[0] if setting == "auto" else int(setting) > 1 and not resume  # checked at its start
    if checked and not off and budget is not None:
        step, steps, after = _planned(model, train, data, resolved.optim, ctx, repeats=10)  # steadier
        if setting == "auto":  # one member's run
            seconds = step * steps * resolved.optim.max_epochs + end_reserve(0, after)
        else:  # one member's shortest: one epoch and its evaluations, in the 1 s _fit_members gives at least
            seconds = max(1.0, step * steps + after)
        room = budget - (time.perf_counter() - started) - end_reserve(budget, 0)  # less the merged run's end
    return ensemble.choose_members(config.optim.members, wanted, off, seconds, room)


def _fit_members(config: TrainConfig, resolved: ResolvedConfig, data: SequenceData, ctx: distributed.Context,
                 resume: bool, started: float, chosen: list[str]) -> FitResult:
    """optim.members runs one after another, each a normal run in members/<i>/ (seed optim.seed + i, its
    share of what is left of the budget; a finished one is reused on resume, an interrupted one resumes),
    merged into one model (training/ensemble.py): the run's checkpoint, metrics and report are its."""
    run_dir, k = Path(config.run_dir) / config.name, resolved.optim.members
    print("\n".join(chosen), flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(resolved, run_dir / "config.yaml")  # what a resumed run reads optim.members from
    if configured():  # one MLflow run for the ensemble (its members train quiet); finish_run ends it
        MlflowRun.start(run_dir, resolved, resume)
    budget, results = config.optim.time_budget, []
    for i in range(k):
        folder = run_dir / "members" / str(i)
        if not (resume and (folder / "test_metrics.json").exists()):
            left = None if budget is None else max(1.0, (budget - (time.perf_counter() - started)) / (k - i))
            fit_member = config.with_values({"optim.members": 1, "optim.seed": config.optim.seed + i,
                                             "optim.time_budget": left, "optim.plots": False,
                                             "run_dir": str(folder.parent), "name": str(i)})
            _fit(fit_member, ctx, None, resume, True, time.perf_counter(), data)
        results.append((Checkpoint.load(folder / "checkpoint.pt"), folder))
        figures = ", ".join(f"{name} {value:.4g}" for name, value in results[-1][0].test_metrics.items()
                            if name in ("accuracy", "rmse", "mase"))
        print(f"member {i + 1} of {k} (seed {config.optim.seed + i}, {folder}): test {figures}", flush=True)
    merged = ensemble.merge([checkpoint.model() for checkpoint, _ in results]).to(ctx.device)
    final = resolved.model_copy(update={"model": merged.config})
    records = [json.dumps({"member": i} | json.loads(line)) for i, (_, folder) in enumerate(results)
               for line in (folder / "metrics.jsonl").read_text().splitlines()]
    (run_dir / "metrics.jsonl").write_text("\n".join(records) + "\n")
    test, predicted = _tested(merged, data)
    test["members"] = {str(i): {name: value for name, value in checkpoint.test_metrics.items()
                                if not isinstance(value, dict)} for i, (checkpoint, _) in enumerate(results)}
    epoch = max(checkpoint.epoch for checkpoint, _ in results)
    checkpoint_path = run_dir / "checkpoint.pt"
    _checkpoint(merged, final, data, epoch, test).save(checkpoint_path)
    (run_dir / "test_metrics.json").write_text(json.dumps(test, indent=2))
    train = defaults.training_split(data, final.optim.final_fit)
    diagnosis = _diagnose(merged, data, train, test, final.optim.final_fit)
    finish_run(run_dir, data, final, test, predicted, diagnosis)
    return FitResult(run_dir, checkpoint_path, test, epoch, diagnosis)


def _run(model: GRUModel, data: SequenceData, train: Split, config: ResolvedConfig, ctx: distributed.Context,
         on_epoch: EpochHook | None, resume: bool, quiet: bool, deadline: float | None,
         chosen: list[str]) -> FitResult:
    """Train the resolved run, then evaluate, checkpoint and report it."""
    run_dir = Path(config.run_dir) / config.name
    if ctx.is_main and not quiet:
        print("\n".join(chosen), flush=True)
    checkpoint = run_dir / "checkpoint.pt"
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    best_epoch = _train(model, data, train, config, run_dir, checkpoint, ctx, on_epoch, resume, quiet,
                        None if deadline is None else time.perf_counter() + deadline)
    ctx.barrier()  # the best checkpoint is on disk before anyone reads it
    if not ctx.is_main:
        return FitResult(run_dir, checkpoint, {}, best_epoch)
    model.load_state_dict(Checkpoint.load(checkpoint).state_dict)
    kept = _shrunk(model, data, config)
    test, predicted = _tested(model, data)
    test = kept | test
    _checkpoint(model, config, data, best_epoch, test).save(checkpoint)
    (run_dir / "test_metrics.json").write_text(json.dumps(test, indent=2))
    # quiet: a comparison's candidate, an ensemble's member or a trial, read for its metrics only; reading
    # the training split again cost a 1,000,000-step recording's window candidates 70 s and 8 GB each
    diagnosis = [] if data.sharded or quiet else _diagnose(model, data, train, test, config.optim.final_fit)
    finish_run(run_dir, data, config, test, predicted, diagnosis)
    return FitResult(run_dir, checkpoint, test, best_epoch, diagnosis)


def _diagnose(model: GRUModel, data: SequenceData, train: Split, test: dict[str, Any],
              final_fit: bool) -> list[str]:
    """The kept model on its own training series against the held-out ones (training/diagnose.py)."""
    held_out = (test, "test") if final_fit else (evaluate(model, data.val, data), "validation")
    kept = test.get("correction_kept") != 0.0
    baseline = "" if kept else baseline_name(model.config.seasonal_skip, model.config.drift,
                                             model.config.linear_steps, model.config.linear_summary)
    lines = diagnose(data.task, evaluate(model, train, data), *held_out, baseline=baseline)
    ahead = naive_ahead(test, model.config.seasonal_skip, model.config.drift)  # what the test shows
    return lines + test_labels(test) + ahead


def _plan(model: GRUModel, train: Split, data: SequenceData, config: ResolvedConfig, ctx: distributed.Context,
          started: float, run_dir: Path, resume: bool) -> tuple[ResolvedConfig, str, float | None]:
    """The config with optim.max_epochs within optim.time_budget, from a step timed now on a copy of the
    model (recipe.py plan_epochs), and the seconds from now by which training must end (None: no budget).
    A resumed run keeps the epochs its first start planned."""
    opt = config.optim
    interrupted = saved_config(run_dir) if resume else None
    if interrupted is not None and opt.time_budget is not None:
        epochs = interrupted["optim"]["max_epochs"]
        return config.with_epochs(epochs), \
            f"optim.max_epochs={epochs} (as planned when the interrupted run started)", None
    seconds, steps, after = _planned(model, train, data, opt, ctx)
    spent = time.perf_counter() - started
    epochs, line = plan_epochs(opt.time_budget, spent, seconds, steps, opt.max_epochs, after)
    if opt.time_budget is None:
        return config.with_epochs(epochs), line, None
    return config.with_epochs(epochs), line, opt.time_budget - spent - end_reserve(opt.time_budget, after)


def _planned(model: GRUModel, train: Split, data: SequenceData, opt: ResolvedOptimConfig,
             ctx: distributed.Context, repeats: int = 3) -> tuple[float, int, float]:
    """Seconds of one optimiser step (timed now), steps per epoch, and seconds of the final evaluations."""
    steps = len(distributed.batch_plan(train.lengths, opt.batch_size, torch.Generator(), ctx, data.sharded))
    if not opt.final_fit:  # a validation pass each epoch: about a third of a step per batch
        steps += math.ceil(len(data.val) / opt.batch_size / 3)
    seconds = _step_seconds(model, train, opt, ctx.device, repeats)
    reads = _read_seconds(model, data.test, ctx.device) + _read_seconds(model, train, ctx.device)
    return seconds, steps, reads


PROBE_ELEMENTS = 1 << 14  # padded steps (rows x steps) of the read timed for the plan


@torch.no_grad()
def _read_seconds(model: GRUModel, split: Split, device: torch.device) -> float:
    """Seconds `_read_split` will take over `split` (the end of a run reads the test split, and the
    training split for the diagnosis), from a read of a part of its first chunk timed now: a read costs
    about its chunks' steps in sequence times their rows. Counted in rows of a training step's cost, a
    1,000,000-step recording read as one sequence was planned at under 1 ms and took ~20 s."""
    if not len(split):
        return 0.0
    steps, mode = split.X.shape[1], model.training
    rows = min(len(split), _chunk_rows(model, split)[0])  # a chunk's, as _read_split reads them
    probe_steps = min(steps, PROBE_ELEMENTS)
    probe_rows = min(rows, max(1, PROBE_ELEMENTS // probe_steps))
    y = split.y[:probe_rows, :probe_steps] if model.task_head.per_step else split.y[:probe_rows]
    probe = Split(split.X[:probe_rows, :probe_steps], y, np.minimum(split.lengths[:probe_rows], probe_steps))
    model.eval()
    begun = time.perf_counter()
    _read_split(model, probe, device)
    seconds = time.perf_counter() - begun
    model.train(mode)
    return seconds * (steps / probe_steps) * (rows / probe_rows) * math.ceil(len(split) / rows)


def _step_seconds(model: GRUModel, train: Split, opt: ResolvedOptimConfig, device: torch.device,
                  repeats: int = 3) -> float:
    """Median seconds of one optimiser step (augmentation, forward, backward, AdamW) on a copy of the
    model, after one warm-up step; the run's random state is left as it was. The batches timed are those
    of an epoch's plan (distributed.global_batches) whose padded size (series × longest) is nearest the
    plan's mean: a step's time grows with it, so their time is the mean step's."""
    probe = copy.deepcopy(model).train()
    optimizer = make_optimizer(probe, opt.optimizer, opt.learning_rate, opt.weight_decay)
    batches = distributed.global_batches(train.lengths, opt.batch_size, torch.Generator().manual_seed(0))
    padded = [distributed.padded_size(train.lengths, batch) for batch in batches]
    mean = statistics.mean(padded)
    typical = sorted(range(len(batches)), key=lambda i: abs(padded[i] - mean))
    times = []
    with torch.random.fork_rng(devices=[]):
        for i in range(repeats + 1):
            begun = time.perf_counter()
            X, y, lengths = _batch(train, batches[typical[i % len(typical)]], probe.task_head, device)
            X, lengths, y = _augmented(probe, X, lengths, y, opt)
            optimizer.zero_grad()
            _loss(probe, X, y, lengths).backward()
            nn.utils.clip_grad_norm_(probe.parameters(), opt.grad_clip)
            optimizer.step()
            if device.type == "cuda":  # kernels run asynchronously: wait for them
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - begun)
    return statistics.median(times[1:])


def _shrunk(model: GRUModel, data: SequenceData, config: ResolvedConfig) -> dict[str, float]:
    """A value model with a validation split held out: how much of its correction to the baseline it
    keeps (training/shrink.py), printed and reported."""
    if not model.task_head.values or config.optim.final_fit:
        return {}
    overlap = model.config.output_size - 1 if data.task == "forecast" else 0  # windows sharing targets
    factor, line = shrink_to_baseline(model, data.val, overlap)
    print(line, flush=True)
    return {"correction_kept": factor}


def _train(
    model: GRUModel, data: SequenceData, train: Split, config: ResolvedConfig, run_dir: Path, ckpt: Path,
    ctx: distributed.Context, on_epoch: EpochHook | None, resume: bool, quiet: bool, deadline: float | None,
) -> int:
    """Train on `train`; with a validation split (not optim.final_fit), keep the best epoch and stop
    early; stop when another epoch would end after `deadline` (time.perf_counter(); the machine slowed
    down after the plan). Returns the epoch whose weights are in the checkpoint."""
    opt, validating = config.optim, not config.optim.final_fit
    net = distributed.wrap(model, ctx)  # DDP averages gradients across ranks
    optimizer = make_optimizer(model, opt.optimizer, opt.learning_rate, opt.weight_decay)
    steps = len(distributed.batch_plan(train.lengths, opt.batch_size, torch.Generator(), ctx, data.sharded))
    schedule = make_schedule(optimizer, opt.schedule, opt.learning_rate, steps * opt.max_epochs)
    generator = torch.Generator().manual_seed(opt.seed)  # the same global order on every rank
    progress = Progress()

    def stops(done: Progress) -> bool:
        return done.stale >= opt.patience and may_stop(opt.schedule, done.epoch, opt.max_epochs)

    if resume:
        progress = load_last(run_dir, model, optimizer, schedule, generator, config.to_dict())
    show = config.progress and ctx.is_main
    epochs = tqdm(range(progress.epoch + 1, opt.max_epochs + 1), desc=config.name, disable=not show,
                  initial=progress.epoch, total=opt.max_epochs)
    if validating and stops(progress):  # interrupted after it had already stopped early
        epochs = tqdm([], disable=True)
    average = _Average(opt, ckpt, progress.epoch)
    with Tracker(run_dir, config, ctx.is_main, progress.epoch, mlflow=not quiet) as tracker:
        for epoch in epochs:
            started = time.perf_counter()
            train_loss = _train_epoch(net, model, train, optimizer, schedule, opt, generator, ctx,
                                      data.sharded)
            if not np.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch}; "
                                         "lower optim.learning_rate or optim.grad_clip")
            record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss,
                                      "learning_rate": schedule.get_last_lr()[0]}
            if validating:  # every rank: identical weights, identical decisions
                record |= {f"val_{k}": v for k, v in evaluate(model, data.val, data).items()}
            record["seconds"] = round(time.perf_counter() - started, 4)
            tracker.log(record)
            epochs.set_postfix(train=f"{train_loss:.4f}", **({"val": f"{record['val_loss']:.4f}"}
                                                             if validating else {}))
            if on_epoch is not None:
                on_epoch(epoch, record)  # e.g. an Optuna trial reporting, and maybe pruning
            progress.epoch = epoch
            # a final fit keeps its newest epoch: the last one in the end, the last good one if it diverges
            if not validating or record["val_loss"] < progress.best_loss:
                progress.best_loss = record.get("val_loss", 0.0)
                progress.best_epoch, progress.stale = epoch, 0
                if ctx.is_main:
                    _checkpoint(average.after(model, epoch), config, data, epoch, {}).save(ckpt)
            else:
                progress.stale += 1
            if ctx.is_main:  # after the best checkpoint: a kill between the two repeats no work
                save_last(run_dir, model, optimizer, schedule, generator, progress, config.to_dict())
            if validating and stops(progress):
                break
            late = deadline is not None and time.perf_counter() + record["seconds"] > deadline
            if distributed.agree(late, ctx) and epoch < opt.max_epochs:
                if ctx.is_main and not quiet:  # a comparison's candidate or a trial says nothing
                    tqdm.write(f"time budget: stopped after epoch {epoch} of {opt.max_epochs} (the machine "
                               "ran slower than the step timed at the start)")
                break
    return progress.best_epoch


class _Average:
    """optim.average: from epoch `first` on, a final fit's checkpoint holds the mean of the weights after
    each epoch (SWA) rather than the last epoch's: the one-cycle schedule's falling learning rate still
    moves the weights there, and their mean sits in a flatter part of the loss than any one of them. A
    resumed run takes the mean so far from its checkpoint (the epochs averaged follow from `first`)."""

    def __init__(self, opt: ResolvedOptimConfig, ckpt: Path, done: int):
        share = opt.average if opt.final_fit else 0.0
        self.first = opt.max_epochs - max(1, round(share * opt.max_epochs)) + 1 if share else None
        self.mean: dict[str, torch.Tensor] | None = None
        self.resumed = ckpt if self.first is not None and done >= self.first else None

    def after(self, model: GRUModel, epoch: int) -> GRUModel:
        """The model to checkpoint after `epoch` (the main rank's): `model` itself, or a copy holding the
        mean so far."""
        if self.first is None or epoch < self.first:
            return model
        if self.mean is None and self.resumed is not None:  # read here: only the main rank checkpoints
            self.mean = dict(Checkpoint.load(self.resumed).state_dict)
        state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        if self.mean is not None:  # the running mean over epoch - first + 1 epochs
            count = epoch - self.first + 1
            state = {name: _moved(mean, state[name], count) for name, mean in self.mean.items()}
        self.mean = state
        averaged = copy.deepcopy(model)
        averaged.load_state_dict(state)
        return averaged


def _moved(mean: torch.Tensor, value: torch.Tensor, count: int) -> torch.Tensor:
    """A running mean over `count` values, `value` the newest (a resumed mean comes from the CPU)."""
    mean = mean.to(value.device)
    return mean + (value - mean) / count if mean.is_floating_point() else value


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = model.parameters()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optim.optimizer must be adamw, adam, sgd or rmsprop, got {name!r}")


def _loss(
    model: GRUModel, X: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor | None = None,
    net: nn.Module | None = None,
) -> torch.Tensor:
    """`net` is the DDP-wrapped model when training on several ranks."""
    out, _, level = (net or model)(X, lengths=lengths)
    return _loss_of(model, out, y, level)


def _loss_of(model: GRUModel, out: torch.Tensor, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    head = model.task_head
    return heads.loss(head, out, model.normaliser.targets(y, level) if head.values else y)


def _batch(
    split: Split, idx: torch.Tensor, head: Head, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """X, y (on `device`) and lengths (on the CPU, as packing wants them) of the sequences `idx`, cut to
    the longest of them; lengths is None when none is padded."""
    idx = idx.cpu()
    lengths = torch.as_tensor(split.lengths)[idx]
    steps = int(lengths.max()) if len(idx) else split.X.shape[1]
    X, y = torch.as_tensor(split.X)[idx, :steps], torch.as_tensor(split.y)[idx]
    if head.per_step:  # labels (N, T) are cut like X
        y = y[:, :steps]
    padded = bool((lengths < steps).any())
    return X.to(device), y.to(device), (lengths if padded else None)


def _train_epoch(
    net: nn.Module, model: GRUModel, split: Split, optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler, opt: ResolvedOptimConfig, generator: torch.Generator,
    ctx: distributed.Context, sharded: bool,
) -> float:
    """One pass over the training split in global batches of `opt.batch_size`; this rank computes its
    shard of each (distributed.py). Returns the mean training loss over all ranks."""
    model.train()
    plan = distributed.batch_plan(split.lengths, opt.batch_size, generator, ctx, sharded)
    scaler = distributed.grad_scaler(opt.precision, ctx.device)
    total = count = 0.0
    for local, weight in plan:
        X, y, lengths = _batch(split, local, model.task_head, ctx.device)
        X, lengths, y = _augmented(model, X, lengths, y, opt)
        with distributed.autocast(opt.precision, ctx.device):
            loss = _loss(model, X, y, lengths, net)
        optimizer.zero_grad()
        scaler.scale(loss * weight).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        total += loss.item() * len(local) * (weight > 0)
        count += len(local) * (weight > 0)
    return distributed.all_reduce_sum(total, ctx) / distributed.all_reduce_sum(count, ctx)


def _augmented(model: GRUModel, X: torch.Tensor, lengths: torch.Tensor | None, y: torch.Tensor,
               opt: ResolvedOptimConfig) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A training batch perturbed (recipe.py): classification and tagging only, as a perturbed window has
    another forecast; time-warped, cropped and mixed for classification only, as tagging's labels are per
    step. y: labels, or soft targets where mixed."""
    if model.task_head.values:
        return X, lengths, y
    X = augment(X, lengths, model.normaliser, opt.jitter, opt.scaling)
    if model.task_head.per_step:
        return X, lengths, y
    X, lengths = crop(time_warp(X, lengths, opt.time_warp), lengths, opt.crop)
    if not opt.mixup:
        return X, lengths, y
    return mixup(X, lengths, soft_targets(y, model.config.output_size), model.normaliser, opt.mixup)


EVAL_STEPS = 1 << 18  # padded steps scored at once (rows x steps): ~1 GB at hidden size 128
PART_STEPS = 1 << 16  # a longer recording is read in parts of this many steps (_chunk_rows)


@torch.no_grad()
def evaluate(model: GRUModel, split: Split, data: SequenceData) -> dict[str, Any]:
    model.eval()
    device = model.head.weight.device
    if data.sharded and split is not data.test:  # this rank's series only: gather every rank's
        X, y = torch.as_tensor(split.X, device=device), torch.as_tensor(split.y, device=device)
        return _evaluate_sharded(model, split, data, X, y)
    metrics, truth, predicted = _read_split(model, split, device)
    if split is data.test:
        return metrics | heads.scores(model.task_head, truth, predicted, data.test_mase_scale,
                                      data.test_series)
    return metrics | heads.scores(model.task_head, truth, predicted)


def _read_split(model: GRUModel, split: Split, device: torch.device) -> tuple[dict[str, Any], np.ndarray,
                                                                                np.ndarray]:
    """The loss, the truth and the answers over a split, read EVAL_STEPS padded steps at a time: read at
    once, the 200,000 windows of a 1,000,000-step recording took 14 GB and more (hidden size 128)."""
    head, steps = model.task_head, split.X.shape[1]
    losses: list[float] = []
    weights: list[int] = []
    truths, answers = [], []
    rows, in_parts = _chunk_rows(model, split)
    for idx in torch.arange(len(split)).split(rows):
        X, y, lengths = _batch(split, idx, head, device)
        if in_parts:
            read = _read_in_parts(model, X, y, losses, weights)
        else:
            out, _, level = model(X, lengths=lengths)  # one pass for the loss and the answers
            losses.append(_loss_of(model, out, y, level).item())
            weights.append(int((y != PAD_LABEL).sum()) if head.per_step else len(idx))
            read = model.answers(out, level, lengths)
        truth, answer = y.cpu().numpy(), read.cpu().numpy()
        if head.per_step:  # each chunk is cut to its longest: back to the split's steps (PAD is not scored)
            wide = [(0, 0), (0, steps - truth.shape[1])]
            truth, answer = np.pad(truth, wide, constant_values=PAD_LABEL), np.pad(answer, [*wide, (0, 0)])
        truths.append(truth)
        answers.append(answer)
    if len(losses) == 1:
        return {"loss": losses[0]}, truths[0], answers[0]
    scored = [(loss, weight) for loss, weight in zip(losses, weights, strict=True) if weight]
    loss = float(np.average([loss for loss, _ in scored], weights=[weight for _, weight in scored]))
    return {"loss": loss}, np.concatenate(truths), np.concatenate(answers)


def _chunk_rows(model: GRUModel, split: Split) -> tuple[int, bool]:
    """Rows read at once (EVAL_STEPS padded steps), and whether each row is read in parts of PART_STEPS:
    a per-step model that streams reads a recording longer than that as a stream does, its state
    carried (read whole, a 1,000,000-step recording held ~4 GB of activations)."""
    steps = split.X.shape[1]
    if model.task_head.per_step and steps > PART_STEPS and model.streaming_refusal() is None:
        return 1, True
    return max(1, EVAL_STEPS // max(1, steps)), False


def _read_in_parts(model: GRUModel, X: torch.Tensor, y: torch.Tensor, losses: list[float],
                   weights: list[int]) -> torch.Tensor:
    """One sequence's answers, read PART_STEPS steps at a time with the state carried; each part's loss
    and scored steps appended to `losses` and `weights`."""
    state, answers = None, []
    for start in range(0, X.shape[1], PART_STEPS):
        labels = y[:, start : start + PART_STEPS]
        out, state, level = model(X[:, start : start + PART_STEPS], state=state)
        losses.append(_loss_of(model, out, labels, level).item())
        weights.append(int((labels != PAD_LABEL).sum()))
        answers.append(model.answers(out, level, None))
    return torch.cat(answers, dim=1)


@torch.no_grad()
def _tested(model: GRUModel, data: SequenceData) -> tuple[dict[str, Any], np.ndarray]:
    """The test metrics with the baselines beside them, and the model's test answers (what the plots
    draw), from one pass over the test split: a 1,000,000-step recording read three times (loss,
    answers, plots) took 55 s."""
    model.eval()
    metrics, truth, predicted = _read_split(model, data.test, model.head.weight.device)
    test = metrics | heads.scores(model.task_head, truth, predicted, data.test_mase_scale, data.test_series)
    return with_baselines(test, data, lambda: predicted), predicted


def _evaluate_sharded(
    model: GRUModel, split: Split, data: SequenceData, X: torch.Tensor, y: torch.Tensor
) -> dict[str, Any]:
    ctx = distributed.Context(*distributed.rank_and_world(), device=X.device)
    loss_sum, predicted = 0.0, np.zeros((0, model.config.output_size), np.float32)
    if len(X):
        loss_sum = _loss(model, X, y).item() * len(X)
        predicted = model.predict(X)[0].cpu().numpy()
    y_all, predicted = distributed.gather(split.y, ctx), distributed.gather(predicted, ctx)
    metrics: dict[str, Any] = {"loss": distributed.all_reduce_sum(loss_sum, ctx) / len(y_all)}
    return metrics | heads.scores(model.task_head, y_all, predicted)


def _checkpoint(
    model: GRUModel, config: ResolvedConfig, data: SequenceData, epoch: int, test: dict[str, Any]
) -> Checkpoint:
    return Checkpoint.of(
        model, config, feature_names=data.feature_names, label_names=data.label_names,
        max_train_length=data.max_length, data_source=data.source, epoch=epoch, test_metrics=test,
        ragged=any(split.ragged for split in (data.train, data.val, data.test)),
        min_train_length=int(min(split.lengths.min() for split in (data.train, data.val) if len(split))),
    )
