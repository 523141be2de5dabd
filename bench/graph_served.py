"""Served cost of the exported graph: `python -m bench.graph_served --before-tree DIR`.

Exports the small bench model twice, with an earlier source tree's exporter (DIR: a checkout, or
`git archive REV | tar -x -C DIR`) and with this tree's, serves both bundles with this tree's server (one
worker each), and measures native and v2 JSON at 32 closed-loop clients, the two in turn for `--rounds`,
so that only the graph differs. Prints medians of req/s and server CPU per request, and the node counts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from bench.models import SMALL, build
from bench.overload import served_rate
from bench.run import RESULTS, serving

APIS = ("native", "v2-json")


def export_with(tree: Path, work: Path) -> None:
    code = ("from pathlib import Path; from bench.models import SMALL, build; "
            f"build(Path({str(work)!r}), (SMALL,))")
    subprocess.run([sys.executable, "-c", code], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                   check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-tree", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (after 1 s of warm-up)")
    args = parser.parse_args(argv)
    works = {"before": RESULTS / "graph_served" / "before", "after": RESULTS / "graph_served" / "after"}
    export_with(args.before_tree.resolve(), works["before"])
    build(works["after"], (SMALL,))
    servers = {k: serving("gru-serve", w, 1) for k, w in works.items()}
    rps: dict[str, dict[str, list[float]]] = {k: {a: [] for a in APIS} for k in works}
    cpu_us: dict[str, dict[str, list[float]]] = {k: {a: [] for a in APIS} for k in works}
    try:
        for round_ in range(args.rounds):
            for api in APIS:
                for k in list(works)[::1 if round_ % 2 == 0 else -1]:
                    server = servers[k]
                    rate, cost = served_rate(server, api, SMALL, args.seconds)
                    rps[k][api].append(rate)
                    cpu_us[k][api].append(cost)
            print(f"round {round_ + 1}/{args.rounds}, load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)
    for k, work in works.items():
        nodes = len(onnx.load(work / "models" / SMALL.name / "1" / "model.onnx").graph.node)
        for api in APIS:
            print(f"{k:<6} {nodes:4d} nodes  {api:<8} {np.median(rps[k][api]):6.0f} req/s  "
                  f"{np.median(cpu_us[k][api]):4.0f} us/req")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
