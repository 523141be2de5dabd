"""Worst differences measured on exported bundles, with real onnxruntime sessions:
  ragged   - a padded batch of random mixed lengths vs each sequence run alone (every model);
  chunked  - random chunkings streamed with carried state vs the whole prefix (streamable models).

    python bench/exactness.py --models models [--trials 200] [--out bench/results/exactness.json]

Prints a table and writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.batching import compute_now  # noqa: E402
from service.repository import discover  # noqa: E402
from service.runtime import ModelRuntime  # noqa: E402
from service.settings import Settings  # noqa: E402


def ragged_worst(runtime: ModelRuntime, rng: np.random.Generator, trials: int, max_len: int) -> float:
    worst, features = 0.0, runtime.manifest.inputs.num_features
    for _ in range(trials):
        lengths = rng.integers(1, max_len + 1, size=int(rng.integers(2, 17)))
        sequences = [rng.normal(size=(int(n), features)).astype(np.float32) for n in lengths]
        together = compute_now(runtime, sequences).outputs
        for i, seq in enumerate(sequences):
            worst = max(worst, float(np.abs(together[i] - runtime.predict(seq[None])[0]).max()))
    return worst


def chunked_worst(runtime: ModelRuntime, rng: np.random.Generator, trials: int, max_len: int) -> float:
    worst, features = 0.0, runtime.manifest.inputs.num_features
    tagging = runtime.manifest.task == "tagging"
    for _ in range(trials):
        length = int(rng.integers(2, 4 * max_len))
        sequence = rng.normal(size=(length, features)).astype(np.float32)
        cuts = np.unique(rng.integers(1, length, size=int(rng.integers(1, 10))))
        state, seen = None, 0
        for chunk in np.split(sequence, cuts):
            result = compute_now(runtime, [chunk], None if state is None else state[None])
            output, state = result.outputs[0], result.states[0]
            seen += len(chunk)
            whole = runtime.predict(sequence[None, :seen])[0]
            expected = whole[seen - len(chunk) : seen] if tagging else whole
            worst = max(worst, float(np.abs(output - expected).max()))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/exactness.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, bundle in discover(args.models).items():
        runtime = ModelRuntime(bundle, Settings())
        runtime.load()
        max_len = runtime.manifest.training.max_train_length
        row = {"model": name, "bidirectional": runtime.manifest.gru.bidirectional,
               "ragged_vs_alone": ragged_worst(runtime, rng, args.trials, max_len)}
        if runtime.manifest.streaming_refusal is None:
            row["chunked_vs_whole"] = chunked_worst(runtime, rng, args.trials, max_len)
        rows.append(row)
    header = f"{'model':<20} {'bidir':<6} {'ragged vs alone':>16} {'chunked vs whole':>17}"
    print(f"{header}   (max abs diff, {args.trials} trials each)")
    for row in rows:
        chunked = f"{row['chunked_vs_whole']:.2e}" if "chunked_vs_whole" in row else "(no streaming)"
        bidir = str(row["bidirectional"])
        print(f"{row['model']:<20} {bidir:<6} {row['ragged_vs_alone']:>16.2e} {chunked:>17}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"trials": args.trials, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
