"""The ``algorithm`` choices side by side on the recorded curve grids.

    .venv/bin/python -m benchmarks.algorithms                      # writes its section of BENCHMARKS.md
    .venv/bin/python -m benchmarks.algorithms --seeds 10 --out /tmp/B.md

Each algorithm runs the product's searcher and scheduler over every recorded grid
(benchmarks.simulate.hpsearch, study in memory) with the same epoch budget and the same seeds. Per
grid and algorithm: how many seeds got within 1% of the grid's best healthy config inside the
budget, the median epochs they spent to get there, and the median objective of the config returned
at the end.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import warnings
from typing import Any

from benchmarks import simulate
from benchmarks.common import Stamp, command_line, fmt, out_path, table, write_section
from benchmarks.curves import CurveSet, default_paths
from benchmarks.figures import target_value
from hpsearch.core.config import ALGORITHMS

CHOICES = tuple(a for a in ALGORITHMS if a != "auto")


CONVERGE = (0, 5, 10)      # budget.converge_after values compared (auto), 0: off


def _job(job: tuple[str, str, int, float, int, int]) -> tuple[tuple[str, str, int], tuple[float, float, int]]:
    import optuna

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path, algorithm, seed, runs, concurrency, converge_after = job
    curves = CurveSet.load(path)
    budget = int(round(runs * curves.epochs))
    trace = simulate.hpsearch(curves, seed, budget, storage="memory", concurrency=concurrency, algorithm=algorithm,
                              converge_after=converge_after)
    _, best = curves.best_final()
    found = trace.returned_at(budget)
    return (path, algorithm, converge_after), (trace.epochs_to(target_value(best, curves.mode), curves.mode),
                                               found[2] if found is not None else math.nan, trace.spent)


def figures(results: list[tuple[tuple[str, str, int], tuple[float, float, int]]]) -> dict[tuple, dict[str, Any]]:
    by: dict[tuple, list[tuple[float, float, int]]] = {}
    for key, value in results:
        by.setdefault(key, []).append(value)
    out = {}
    for key, values in by.items():
        hits = [e for e, _, _ in values if math.isfinite(e)]
        returned = [v for _, v, _ in values if math.isfinite(v)]
        out[key] = {"seeds": len(values), "hits": len(hits),
                    "epochs": statistics.median(hits) if hits else math.inf,
                    "returned": statistics.median(returned) if returned else math.nan,
                    "spent": statistics.median(s for _, _, s in values)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--runs", type=float, default=32, help="epoch budget in full-length runs")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    stamp = Stamp(command_line("benchmarks.algorithms", argv))
    paths = [str(p) for p in default_paths()]
    jobs = [(p, a, s, args.runs, args.concurrency, 0) for p in paths for a in CHOICES for s in range(args.seeds)]
    jobs += [(p, "auto", s, args.runs, args.concurrency, c) for p in paths for c in CONVERGE for s in range(args.seeds)]
    if args.workers <= 1:       # in this process: no fork of a process that may hold Ray's threads
        results = [_job(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(_job, jobs)
    found = figures(results)
    rows = []
    for path in paths:
        for algorithm in CHOICES:
            f = found[(path, algorithm, 0)]
            rows.append([CurveSet.load(path).model, algorithm, f"{f['hits']} / {f['seeds']}", fmt(f["epochs"]),
                         fmt(f["returned"])])
    body = table(["grid", "algorithm", "seeds within 1% of the best", "median epochs to get there",
                  "median objective returned"], rows)
    body += (f"\n\nBudget {args.runs:g} full-length runs per search, {args.concurrency} trials at a time, "
             "the same seeds for every algorithm. `auto` runs TPE.")
    rows = []
    for path in paths:
        off = found[(path, "auto", 0)]
        for after in CONVERGE:
            f = found[(path, "auto", after)]
            rows.append([CurveSet.load(path).model, after or "off", fmt(f["spent"]),
                         f"{1 - f['spent'] / off['spent']:.0%}" if off["spent"] else "-", fmt(f["returned"]),
                         fmt(f["returned"] - off["returned"]), f"{f['hits']} / {f['seeds']}"])
    body += "\n\nStopping a converged search (`budget.converge_after`, `auto`, same seeds and budget):\n\n"
    body += table(["grid", "converge_after", "median epochs spent", "epochs saved", "median objective returned",
                   "objective lost (median)", "seeds within 1% of the best"], rows)
    print(body)
    write_section("algorithms", "Algorithms on the recorded grids", body, stamp, out_path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
