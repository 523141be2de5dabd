"""Two trees of gru-serve side by side in one run: `python -m bench.before_after --before DIR`.

DIR is another checkout of the project (e.g. `git archive COMMIT | tar -x -C DIR`). Both are served at
once with the bench models (2 workers each, the `gru` of this environment, each tree first on
PYTHONPATH) and measured in turn per row (bench/run.py `measure`: wrk, one sequence per request), per
model, client count and core placement, so that a drift in the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

from bench.models import MODELS, build
from bench.placement import PLACEMENTS, placements
from bench.run import RESULTS, measure, request_body, serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--placements", default=",".join(PLACEMENTS))
    args = parser.parse_args(argv)
    work = RESULTS / "work"
    build(work)
    for model in MODELS:
        (work / f"{model.name}.body.json").write_bytes(request_body(model))
    trees = {"before": str(args.before.resolve()), "after": os.getcwd()}
    with serving("gru-serve", work, 2, {"PYTHONPATH": trees["before"]}) as before, \
            serving("gru-serve", work, 2, {"PYTHONPATH": trees["after"]}) as after:
        for model, clients, place in itertools.product(MODELS, map(int, args.concurrency.split(",")),
                                                       placements(args.placements)):
            for name, server in (("before", before), ("after", after)):
                r = measure(server, model.name, work / f"{model.name}.body.json", (), clients, args.duration,
                            place)
                print(f"{model.name:<5} {place.name:<6} {clients:>3} clients {name:<6} {r['rps']:7.0f} "
                      f"req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                      f"{r['cpu_us_per_req']:5.0f} CPU µs/req  errors {r['errors']}  load {r['loadavg']}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
