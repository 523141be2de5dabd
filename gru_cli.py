"""The one console script, `gru`: train, export, serve, predict. Each subcommand imports only its own
package, so `gru serve` and `gru predict` work in an image without torch."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "train": ("training.cli", "train a GRU on a built-in dataset or your own file", "train"),
    "tune": ("training.tune", "search hyperparameters with Optuna; write the best config", "tune"),
    "export": ("export.cli", "export a checkpoint to a verified ONNX model bundle", "export"),
    "import": ("export.import_cli", "build a bundle from an ONNX GRU graph trained elsewhere", "export"),
    "serve": ("service.cli", "serve a model repository over REST (and gRPC)", "serve"),
    "predict": ("service.client", "send sequences to a running server and print the answer", "serve"),
    "pull": ("service.registry", "download a registered model version (MLflow) into a model repository",
             "mlflow"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gru", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    for name, (module_name, help_text, extra) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if argv[:1] == [name]:  # import only the chosen command's package
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                parser.error(f"`gru {name}` needs the '{extra}' extra: "
                             f"pip install 'gru-serve[{extra}]' ({exc})")
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
            argv = getattr(module, "prepare_argv", list)(argv)  # e.g. predict: --values -0.71,...
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, OSError, FloatingPointError) as exc:  # what a user can fix: one line, exit 2
        print(f"gru {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
