"""`gru export`: checkpoint -> verified bundle in a model repository."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `gru train`")
    parser.add_argument("--repository", default="models", help="model repository folder (default: models)")
    parser.add_argument("--name", required=True, help="model name: letters, digits, '_', '-', '.'")
    parser.add_argument("--version", type=int, help="bundle version (default: the next free number)")
    parser.add_argument("--max-length", type=int,
                        help="longest sequence the service accepts (default: max(256, 4 x training length))")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle version")


def run(args: argparse.Namespace) -> int:
    from export.bundle import export_checkpoint

    result = export_checkpoint(Path(args.checkpoint), Path(args.repository), args.name,
                               args.version, args.max_length, args.overwrite)
    parity = result.manifest.parity
    print(f"wrote {result.bundle_dir} (parity vs PyTorch: max abs diff {parity.max_abs_diff:.2e} "
          f"over (batch, length) cases {parity.cases})")
    return 0
