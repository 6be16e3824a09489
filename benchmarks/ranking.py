"""Ranking trials on a noisy objective: which ``objective.rank`` returns the better config.

    .venv/bin/python -m benchmarks.ranking                      # writes its section of BENCHMARKS.md
    .venv/bin/python -m benchmarks.ranking --smoke --out /tmp/B.md

A search returns the trial its ranking puts first (the report's first row, what ``hpsearch export``
writes first). With ``rank: best`` that is the trial with the best single epoch, the maximum of many
noisy measurements; ``last`` takes one measurement; ``mean`` the mean of the last ``window``. With
``objective.warm_start_margin`` above 0 the best warm-start trial is returned instead unless the
first beats it, over the mean of their last ``window`` epochs, by more than that many standard
errors of the objective's epoch-to-epoch noise (hpsearch.core.warm_start.kept_warm_start).

Per grid: the two recorded grids and the corpus's real-data grids (benchmarks.grids.real_grid: real
training runs whose validation metric carries the noise of its validation set), each as recorded
and with the added noise of ``benchmarks.rung_noise`` (a rate near the grid's median final value
on ``--val-samples`` examples). One ``auto`` search per seed with the grid's warm-start points and
the default rung settings; every ranking then picks from that same search's finished trials
(completed or ASHA-stopped), and the config it picks is judged by its recorded final value: seeds
at least as good as the best warm-start point (not searching) and seeds within 1% of the grid's best.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping

from benchmarks import rung_noise, simulate
from benchmarks.common import Stamp, command_line, fmt, out_path, quiet_worker, table, write_section
from benchmarks.curves import default_paths
from benchmarks.figures import target_value
from benchmarks.grids import grid, simulate_points, title, warm_value
from benchmarks.rung_noise import Noisy, noise_sd
from benchmarks.traces import export_rule, warm_indices
from hpsearch.core.objective import score

# (label, objective.rank, window, objective.warm_start_margin)
RANKINGS: tuple[tuple[str, str, int, float], ...] = (
    ("best, margin 0", "best", 5, 0.0), ("best, margin 0.5", "best", 5, 0.5),
    ("best, margin 1 (default)", "best", 5, 1.0), ("best, margin 2", "best", 5, 2.0), ("last, margin 0", "last", 1, 0.0),
    ("mean w5, margin 0", "mean", 5, 0.0), ("mean w5, margin 1", "mean", 5, 1.0),
    ("mean w10, margin 0", "mean", 10, 0.0),
)
REAL = ("real:mlp:digits", "real:mlp:iris", "real:mlp:wine", "real:mlp:breast_cancer", "real:cnn:digits")


def _job(job: tuple[str, bool, int, int, int, int]) -> tuple[tuple, dict[str, float]]:
    """One search (grid, added noise or not, seed, trials at a time, runs, validation samples) and
    the recorded final value of the config each ranking returns from it."""
    quiet_worker()
    name, noisy, seed, concurrency, runs, samples = job
    curves = grid(name)
    seen = Noisy(curves, noise_sd(curves, samples), seed) if noisy else curves
    budget = runs * curves.epochs
    trace = simulate.hpsearch(seen, seed, budget, storage="memory", concurrency=concurrency, algorithm="auto",
                              warm_start=simulate_points(curves))
    interval = curves.run.checkpoint.interval
    warm = warm_indices(curves, curves.run)
    picked = {}
    for label, rank, window, margin in RANKINGS:
        found = export_rule(interval, curves.epochs, rank, window, margin, warm)(trace.trials, curves.mode)
        picked[label] = curves.final(found[0]) if found is not None else math.nan
    return job, picked


def cells(found: Mapping[tuple, dict[str, float]], job: tuple, seeds: int) -> list[str]:
    """Per ranking: seeds whose returned config is >= not searching, seeds within 1% of the best."""
    name = job[0]
    curves = grid(name)
    mode, warm = curves.mode, warm_value(curves)
    target = target_value(curves.best_final()[1], mode)
    out = []
    for label, *_ in RANKINGS:
        values = [found[(name, job[1], seed, *job[2:])][label] for seed in range(seeds)]
        out.append(f"{sum(score(v, mode) >= score(warm, mode) for v in values)} · "
                   f"{sum(score(v, mode) >= score(target, mode) for v in values)}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = rung_noise.arguments(__doc__).parse_args(argv)
    names = [*map(str, default_paths()), *REAL]
    if args.smoke:
        args.seeds, args.runs, args.concurrency, args.workers, names = 2, 6, [2], 1, names[:1]
    stamp = Stamp(command_line("benchmarks.ranking", argv))
    jobs = [(name, noisy, seed, k, args.runs, args.val_samples) for name in names for noisy in (False, True)
            for k in args.concurrency for seed in range(args.seeds)]
    found = rung_noise.run(jobs, args.workers, _job)
    header = ["grid", "noise", "trials at a time", *[label for label, *_ in RANKINGS]]
    rows, grids = [], []
    for name in names:
        curves = grid(name)
        grids.append([title(name), fmt(warm_value(curves)), fmt(curves.best_final()[1]),
                      fmt(noise_sd(curves, args.val_samples))])
        for noisy in (False, True):
            for k in args.concurrency:
                rows.append([title(name), "added" if noisy else "as recorded", k,
                             *cells(found, (name, noisy, k, args.runs, args.val_samples), args.seeds)])
    parts = [f"`auto` with the grid's warm-start points and default rung settings, {args.seeds} seeds, "
             f"{args.runs} full-length runs of budget per search; every ranking picks from the same searches. "
             f"Added noise: Gaussian at every epoch with the spread of a rate near the grid's median final "
             f"value on {args.val_samples} validation samples. Returned configs are judged by their recorded "
             f"final value. Each cell: seeds whose returned config is at least as good as the best warm-start "
             f"point (not searching) · seeds within 1% of the grid's best, of {args.seeds}.",
             table(["grid", "not searching (best warm-start point)", "grid's best", "added noise sd"], grids),
             table(header, rows)]
    body = "\n\n".join(parts)
    write_section("ranking", "Ranking trials on a noisy objective", body, stamp, out_path(args.out))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
