"""Rung decisions on a noisy objective: the ``scheduler:`` noise settings replayed side by side.

    .venv/bin/python -m benchmarks.rung_noise                      # writes its section of BENCHMARKS.md
    .venv/bin/python -m benchmarks.rung_noise --smoke --out /tmp/B.md

A recorded curve holds one measurement per epoch; a real validation metric is a sample of it. Here
each grid's objective gets, per search seed and grid point, independent Gaussian noise at every
epoch with the spread a validation set of ``--val-samples`` (800, the held-out set of the issue
that asked for this) gives a rate near the grid's median final value: sqrt(p(1 - p) / n). What a
search returns is then judged by the point's recorded (noise-free) final value. Every search runs
``auto`` through the product's searcher and scheduler (benchmarks.simulate.hpsearch) with the grid's
warm-start points given, as a user who starts from known configs does.

Per grid, noise level, trials at a time and setting: seeds whose returned config is within 1% of
the grid's best, the median returned value, seeds whose returned config is at least as good as the
best warm-start point (not searching), warm-start points stopped by a rung, and the epochs to the
first returned config within 1%. Each setting names all three (``scheduler.min_trials``, ``compare``,
``keep_warm_start``), so the table does not move when the defaults do.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from benchmarks import simulate
from benchmarks.common import Stamp, command_line, fmt, log, out_path, quiet_worker, table, write_section
from benchmarks.curves import CurveSet, default_paths
from benchmarks.figures import target_value
from benchmarks.grids import REAL_DEFAULT, grid, simulate_points, title, warm_value
from hpsearch.core.objective import score

SETTINGS: dict[str, dict[str, Any]] = {
    "ASHA's rule (last value, 1 other)": {"min_trials": 1, "compare": "last", "keep_warm_start": False},
    "min_trials 3": {"min_trials": 3, "compare": "last", "keep_warm_start": False},
    "compare best": {"min_trials": 1, "compare": "best", "keep_warm_start": False},
    "keep_warm_start": {"min_trials": 1, "compare": "last", "keep_warm_start": True},
    "compare best + keep_warm_start": {"min_trials": 1, "compare": "best", "keep_warm_start": True},
}


class Noisy:
    """A CurveSet whose objective carries seeded Gaussian noise of spread ``sd`` at every epoch
    (the same for a grid point throughout one search); everything else is the recorded grid's."""

    def __init__(self, curves: CurveSet, sd: float, seed: int):
        self._curves, self.sd, self._seed = curves, sd, seed
        self._rows: dict[int, list[dict[str, Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._curves, name)

    def rows(self, index: int) -> list[dict[str, Any]]:
        if index not in self._rows:
            rows, metric = self._curves.rows(index), self._curves.metric
            noise = np.random.default_rng([self._seed, index]).normal(0.0, self.sd, len(rows))
            self._rows[index] = [{**row, metric: row[metric] + float(n)}
                                 if isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric]) else row
                                 for row, n in zip(rows, noise)]
        return self._rows[index]


def noise_sd(curves: CurveSet, samples: int) -> float:
    """The spread of a rate near the grid's median final value, measured on ``samples`` examples."""
    finals = [curves.final(i) for i in range(len(curves)) if math.isfinite(curves.final(i))]
    p = min(max(statistics.median(finals), 0.01), 0.99)
    return math.sqrt(p * (1 - p) / samples)


def _job(job: tuple[str, str, float, int, int, int]) -> tuple[tuple, dict[str, Any]]:
    quiet_worker()
    name, setting, sd, seed, budget, concurrency = job
    curves = grid(name)
    seen = Noisy(curves, sd, seed) if sd > 0 else curves
    points = simulate_points(curves)
    trace = simulate.hpsearch(seen, seed, budget, storage="memory", concurrency=concurrency, algorithm="auto",
                              warm_start=points, rungs=SETTINGS[setting])
    target = target_value(curves.best_final()[1], curves.mode)
    found = trace.returned_at(budget)
    returned = curves.final(found[0]) if found is not None else math.nan
    warm = trace.trials[:len(points)]               # asked first, in order
    reached = next((spent for spent, index, *_ in trace.incumbents
                    if spent <= budget and score(curves.final(index), curves.mode) >= score(target, curves.mode)), None)
    return job, {"returned": returned, "within": score(returned, curves.mode) >= score(target, curves.mode),
                 "not_worse": score(returned, curves.mode) >= score(warm_value(curves), curves.mode),
                 "warm_cut": sum(1 for t in warm if t.outcome == "pruned_asha"), "warm_runs": len(warm),
                 "epochs_to": reached}


def run(jobs: list[tuple], workers: int, job: Callable = _job) -> dict[tuple, dict[str, Any]]:
    """``job`` (a module-level function: job -> (job, result)) over ``jobs`` in ``workers`` processes."""
    log(f"{len(jobs)} searches in {workers} process(es)")
    if workers <= 1:
        return dict(map(job, jobs))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return dict(pool.imap_unordered(job, jobs, chunksize=4))


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options of a replay on a noisy objective (this module's and benchmarks.ranking's)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=32, help="epoch budget per search, in full-length runs")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--val-samples", type=int, default=800, dest="val_samples")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    return parser


def rows_for(found: Mapping[tuple, dict[str, Any]], name: str, sd: float, concurrency: int, seeds: int,
             budget: int, mode: str) -> list[list[str]]:
    rows = []
    for setting in SETTINGS:
        results = [found[(name, setting, sd, seed, budget, concurrency)] for seed in range(seeds)]
        returned = [r["returned"] for r in results if math.isfinite(r["returned"])]
        epochs = [r["epochs_to"] for r in results if r["epochs_to"] is not None]
        rows.append([setting, f"{sum(r['within'] for r in results)}/{seeds}",
                     fmt(statistics.median(returned)) if returned else "-",
                     f"{sum(r['not_worse'] for r in results)}/{seeds}",
                     f"{sum(r['warm_cut'] for r in results)} of {sum(r['warm_runs'] for r in results)}",
                     fmt(statistics.median(epochs)) if epochs else "-"])
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = arguments(__doc__).parse_args(argv)
    if args.smoke:
        args.seeds, args.runs, args.concurrency, args.workers = 2, 6, [2], 1
    stamp = Stamp(command_line("benchmarks.rung_noise", argv))
    names = [*map(str, default_paths()), f"real:{REAL_DEFAULT}"]
    if args.smoke:
        names = names[:1]
    plans = {}
    for name in names:
        curves = grid(name)
        plans[name] = (curves, noise_sd(curves, args.val_samples), args.runs * curves.epochs)
    jobs = [(name, setting, sd, seed, budget, k) for name, (_, noisy, budget) in plans.items()
            for sd in (0.0, noisy) for k in args.concurrency for setting in SETTINGS for seed in range(args.seeds)]
    found = run(jobs, args.workers)
    header = ["setting", "seeds within 1%", "returned (median)", "returned >= not searching",
              "warm-start points cut by a rung", "epochs to within 1% (median)"]
    parts = [f"`auto` with the grid's warm-start points, {args.seeds} seeds, {args.runs} full-length runs of "
             f"budget per search. Noise: Gaussian at every epoch with the spread of a rate near the grid's "
             f"median final value on {args.val_samples} validation samples; returned configs judged by their "
             f"recorded (noise-free) final value."]
    for name, (curves, noisy, budget) in plans.items():
        for sd in (0.0, noisy):
            for k in args.concurrency:
                parts.append(f"### {title(name)}, noise sd {fmt(sd)}, {k} trials at a time\n\n"
                             + table(header, rows_for(found, name, sd, k, args.seeds, budget, curves.mode)))
    body = "\n\n".join(parts)
    write_section("rung-noise", "Rung decisions on a noisy objective", body, stamp, out_path(args.out))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
