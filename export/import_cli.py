"""`gru import`: an ONNX graph holding a GRU model trained elsewhere -> a verified bundle."""

from __future__ import annotations

import argparse
from pathlib import Path


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _numbers(text: str) -> list[float]:
    try:
        return [float(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", type=Path, help="the ONNX file (a graph with ONNX GRU nodes)")
    parser.add_argument("--name", required=True, help="model name: letters, digits, '_', '-', '.'")
    parser.add_argument("--task", required=True, choices=["classification", "regression", "forecast"])
    parser.add_argument("--labels", type=_names, help="classification: class names in output order "
                        "(two names, negative then positive, for one sigmoid output)")
    parser.add_argument("--positive-label", help="one sigmoid output: the label it is the probability of "
                        "(default: the second of --labels)")
    parser.add_argument("--features", type=_names, help="feature names (default feature_0, feature_1, ...)")
    parser.add_argument("--mean", type=_numbers, help="per feature: the graph wants (x - mean) / std; the "
                        "bundle takes raw x and does it (with --std)")
    parser.add_argument("--std", type=_numbers, help="per feature, with --mean")
    parser.add_argument("--input", dest="input_name", help="the sequences' input, if the graph has several")
    parser.add_argument("--output", dest="output_name", help="the answer's output, if the graph has several")
    parser.add_argument("--layout", choices=["btf", "tbf"], help="the input's axes, when the graph does not "
                        "say: btf (batch, time, features) or tbf (time, batch, features)")
    parser.add_argument("--output-activation", choices=["auto", "softmax", "sigmoid", "none"], default="auto",
                        help="classification: add softmax/sigmoid to an output of logits; none: it gives "
                        "probabilities already (default auto: the graph ends in Softmax or Sigmoid)")
    parser.add_argument("--length", type=int, help="a typical sequence length, for the checks and warm-up "
                        "(default 24, or the graph's fixed length)")
    parser.add_argument("--max-length", type=int, help="longest sequence the service accepts "
                        "(default max(256, 4 x --length))")
    parser.add_argument("--repository", default="models", help="model repository folder (default: models)")
    parser.add_argument("--version", type=int, help="bundle version (default: the next free number)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle version")


def run(args: argparse.Namespace) -> int:
    from export.importer import ImportRequest, import_graph

    fields = ("name", "task", "labels", "positive_label", "features", "mean", "std", "input_name",
              "output_name", "layout", "output_activation", "length", "max_length", "version", "overwrite")
    request = ImportRequest(**{k: getattr(args, k) for k in fields})
    result = import_graph(args.graph, Path(args.repository), request)
    manifest = result.manifest
    print(f"wrote {result.bundle_dir}: {manifest.gru.num_layers} GRU node(s), answers equal to the original "
          f"on onnxruntime (max scaled diff {manifest.parity.max_abs_diff:.1e})")
    for note in result.notes:
        print(f"  {note}")
    return 0
