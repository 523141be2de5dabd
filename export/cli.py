"""`gru export`: checkpoint -> verified bundle in a model repository."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `gru train`")
    parser.add_argument("--repository", "--models", default="models",  # --models: as `gru serve` spells it
                        help="model repository folder (default: models)")
    parser.add_argument("--name", required=True, help="model name: letters, digits, '_', '-', '.'")
    parser.add_argument("--version", type=int, help="bundle version (default: the next free number)")
    parser.add_argument("--max-length", type=int,
                        help="longest sequence the service accepts (default: max(256, 4 x training length))")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle version")
    parser.add_argument("--accept-parity-error", action="store_true",
                        help="write the bundle even if onnxruntime differs from PyTorch by more than the "
                        "tolerance (docs/guides/export.md); the manifest records the difference")
    registry = parser.add_argument_group("MLflow", "also register the bundle in an MLflow model registry")
    registry.add_argument("--register", metavar="NAME",
                          help="register the bundle as a new version of the registered model NAME, logged to "
                          "the MLflow run that trained it (if `gru train` tracked one); `gru pull` serves it")
    registry.add_argument("--mlflow", metavar="URI",
                          help="MLflow tracking server (default: MLFLOW_TRACKING_URI)")
    triton = parser.add_argument_group("Triton",
                                       "also write a Triton model-repository entry (onnxruntime backend)")
    triton.add_argument("--triton-repository", help="Triton repository folder: writes <name>/config.pbtxt "
                        "and <name>/<version>/model.onnx")
    triton.add_argument("--triton-sequence", action="store_true",
                        help="sequence batching with implicit state (streaming) instead of dynamic batching")
    triton.add_argument("--triton-max-batch-size", type=int, default=64, help="max_batch_size (default: 64)")
    triton.add_argument("--triton-queue-delay-us", type=int, default=1000,
                        help="max_queue_delay_microseconds of the batcher (default: 1000)")


def refuse_unfinished(path: Path) -> None:
    """A run's checkpoint.pt holds its best epoch so far while it trains, and its test metrics once it
    finished. Before, a run interrupted at epoch 37 of 2,000 was exported without a word, and served."""
    from training.checkpoint import Checkpoint

    trained = Checkpoint.load(path)
    if not trained.test_metrics:
        epoch, epochs, name = trained.epoch, trained.config.optim.max_epochs, trained.config.name
        raise ValueError(f"{path} is from a run that has not finished (its best epoch so far, {epoch} "
                         f"of {epochs}; no test metrics): finish it with `gru train --name {name} --resume` "
                         "and its other settings as they were, then export")


def run(args: argparse.Namespace) -> int:
    from export.bundle import export_checkpoint

    if args.register:  # a missing server or extra is said before the export's work
        from service.registry import client

        client(args.mlflow)
    refuse_unfinished(Path(args.checkpoint))
    result = export_checkpoint(Path(args.checkpoint), Path(args.repository), args.name,
                               args.version, args.max_length, args.overwrite, args.accept_parity_error)
    parity = result.manifest.parity
    print(f"wrote {result.bundle_dir} (parity, nearest the tolerance: {parity.worst_case}, difference "
          f"{parity.max_abs_diff:.2e}, tolerance {parity.tolerance:.2e})")
    if parity.accepted_failure:
        print("warning: the difference is over the tolerance; written anyway (--accept-parity-error), "
              "and the manifest says so (parity.accepted_failure)")
    if args.register:
        from service.registry import register_bundle
        from training.mlflow_run import stored_run_id

        run_id = stored_run_id(Path(args.checkpoint).parent)
        done = register_bundle(result.bundle_dir, args.register, run_id)
        print(f"registered models:/{done.name}/{done.version} (MLflow run {done.run_id}"
              f"{', the training run' if run_id else ''})")
    if args.triton_repository:
        from export.triton import TritonOptions, write_triton_entry

        options = TritonOptions(max_batch_size=args.triton_max_batch_size,
                                max_queue_delay_us=args.triton_queue_delay_us, sequence=args.triton_sequence)
        entry = write_triton_entry(result.bundle_dir, Path(args.triton_repository), options)
        print(f"wrote Triton entry {entry} and {entry.parent / 'config.pbtxt'} "
              f"({'sequence batching, implicit state' if options.sequence else 'dynamic batching'})")
    return 0
