"""Before/after a change to the request path: `python -m bench.compare_trees BEFORE_DIR AFTER_DIR`.

Starts `gru serve` (one worker, the `small` bench model) from each source tree (a checkout or
`git archive REV | tar -x -C DIR`: its PYTHONPATH) and measures each API's 200s/s with 32 closed-loop
clients and the server's CPU per request, the trees and APIs in turn, `--rounds` times, so that a shift
in the machine's load hits every tree alike. Prints medians and their ratios to the first tree; writes
bench/results/compare_trees.json. On a shared machine the CPU per request is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from bench.models import SMALL, build
from bench.overload import APIS, served_rate
from bench.run import RESULTS, serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", type=Path, help="source trees; the first is the baseline")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (after 1 s of warm-up)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = args.results / "work"
    build(work, (SMALL,))
    names = [str(tree.resolve()) for tree in args.trees]
    rps: dict[str, dict[str, list[float]]] = {t: {api: [] for api in APIS} for t in names}
    cpu_us: dict[str, dict[str, list[float]]] = {t: {api: [] for api in APIS} for t in names}
    servers = {t: serving("gru-serve", work, 1, {"PYTHONPATH": t}, grpc=True) for t in names}
    try:
        for round_ in range(args.rounds):
            for api in APIS:
                for tree in names[round_ % len(names):] + names[:round_ % len(names)]:
                    server = servers[tree]
                    rate, cost = served_rate(server, api, SMALL, args.seconds)
                    rps[tree][api].append(rate)
                    cpu_us[tree][api].append(cost)
            print(f"round {round_ + 1}/{args.rounds}, load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)
    print(f"{SMALL.name}, one worker, 32 clients, {args.seconds:g} s per measurement, {args.rounds} rounds; "
          "medians (x the first tree)")
    base = names[0]
    for api in APIS:
        for tree in names:
            r, c = np.median(rps[tree][api]), np.median(cpu_us[tree][api])
            print(f"  {api:<9} {tree:<40} {r:6.0f} req/s ({r / np.median(rps[base][api]):4.2f}x)  "
                  f"{c:4.0f} us/req ({c / np.median(cpu_us[base][api]):4.2f}x)")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "compare_trees.json").write_text(json.dumps({"rps": rps, "cpu_us": cpu_us}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
