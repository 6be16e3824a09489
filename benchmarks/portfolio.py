"""The parts of ``rung-tpe`` alone and together: which share of random configs, and which fit.

    .venv/bin/python -m benchmarks.portfolio                      # writes its section of BENCHMARKS.md
    .venv/bin/python -m benchmarks.portfolio --smoke --out /tmp/B.md

``RungTPESampler`` draws a ``random_share`` of configs at random and fits TPE for the rest, a
``reach_share`` of them on every usable trial's reach (the epoch it reached, then its value there)
and the others on the largest epoch enough trials reached (hpsearch.tune.samplers). Each setting
here is replayed through the product's searcher and scheduler (benchmarks.algorithms.replay) on the
recorded grids, with the same seeds and budgets as ``benchmarks.algorithms``, so the shipped mix is
compared with each of its parts on its own. Seeds within 1% of the grid's best inside the budget,
and the median epochs to get there.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from typing import Any
from unittest import mock

import numpy as np

from benchmarks.algorithms import replay, runs_for
from benchmarks.common import Stamp, command_line, log, out_path, quiet_worker, table, write_section
from benchmarks.curves import default_paths
from benchmarks.figures import iqr_text, target_value
from benchmarks.grids import grid, hit_share, title
from benchmarks.rung_noise import run
from hpsearch.tune import samplers
from hpsearch.tune import searcher as searcher_module
from hpsearch.tune.draws import value_at

SOBOL, INDEPENDENT = "sobol", "independent"

# name -> (random_share, reach_share, draws); the first is what ``rung-tpe`` ships
SETTINGS: dict[str, tuple[float, float, str]] = {
    f"shipped: random {samplers.RANDOM_SHARE:g} (Sobol), reach {samplers.REACH_SHARE:g} of the rest":
        (samplers.RANDOM_SHARE, samplers.REACH_SHARE, SOBOL),
    "the same, independent random draws (rung-tpe until 2026-12-07 19:47 UTC)":
        (samplers.RANDOM_SHARE, samplers.REACH_SHARE, INDEPENDENT),
    "random 1/2, reach fit only": (0.5, 1.0, SOBOL),
    "random 1/2, largest-budget fit only": (0.5, 0.0, SOBOL),
    "random 1/3, largest-budget fit only (BOHB's share; rung-tpe's mix before 2026-12-07)": (1 / 3, 0.0, SOBOL),
    "random 1/3, reach fit only": (1 / 3, 1.0, SOBOL),
}


class IndependentDraws:
    """``SobolDraws``' interface with independent uniform draws, seeded by (seed, index)."""

    def __init__(self, space: Mapping[str, Any], seed: Any):
        self._space, self._seed = dict(space), list(seed) if not isinstance(seed, int) else [seed]

    def config(self, index: int) -> dict[str, Any]:
        row = np.random.default_rng([*self._seed, index]).random(len(self._space))
        return {name: value_at(d, float(u)) for (name, d), u in zip(self._space.items(), row)}


def _sampler_with(setting: tuple[float, float, str]):
    random_share, reach_share, draws = setting

    def make(algorithm: str, space: Mapping[str, Any], seed: int):
        if algorithm != "rung-tpe":
            return samplers.make_sampler(algorithm, space, seed)
        with mock.patch.object(samplers, "SobolDraws", IndependentDraws if draws == INDEPENDENT else samplers.SobolDraws):
            return samplers.RungTPESampler(space, seed, random_share=random_share, reach_share=reach_share)
    return make


def _job(job: tuple[str, str, int, int, int]) -> tuple[tuple, dict[str, Any]]:
    quiet_worker()
    name, setting, seed, budget, concurrency = job
    curves = grid(name)
    with mock.patch.object(searcher_module, "make_sampler", _sampler_with(SETTINGS[setting])):
        trace = replay(curves, "rung-tpe", seed, budget, concurrency)
    return job, {"to_target": trace.epochs_to(target_value(curves.best_final()[1], curves.mode), curves.mode)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settings", nargs="+", type=int, help="only these settings (indices into SETTINGS)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.concurrency, args.workers = 2, [2], 1
    stamp = Stamp(command_line("benchmarks.portfolio", argv))
    names = [str(p) for p in default_paths()][:1 if args.smoke else None]
    settings = [s for i, s in enumerate(SETTINGS) if args.settings is None or i in args.settings]
    budgets = {}
    for name in names:
        curves = grid(name)
        runs = 2 if args.smoke else runs_for(hit_share(curves)[0])
        budgets[name] = int(round(runs * curves.epochs))
    jobs = [(name, setting, seed, budgets[name], k) for name in names for k in args.concurrency
            for setting in settings for seed in range(args.seeds)]
    found = run(jobs, args.workers, _job)
    log("done")
    parts = [f"Seeds 0-{args.seeds - 1} per setting (benchmarks.algorithms replays seeds 0-49), the same budget "
             "per grid as there; `rung-tpe` through the product's searcher and scheduler with only its two "
             "shares, or how it draws its random configs, changed. Epochs to within 1%: median [IQR] over "
             "seeds; never = not inside the budget."]
    for name in names:
        for k in args.concurrency:
            rows = []
            for setting in settings:
                epochs = [found[(name, setting, seed, budgets[name], k)]["to_target"] for seed in range(args.seeds)]
                hits = sum(1 for e in epochs if math.isfinite(e))
                rows.append([setting, f"{hits}/{args.seeds}", iqr_text(epochs)])
            parts.append(f"### {title(name)}, {k} trials at a time, budget {budgets[name]} epochs\n\n"
                         + table(["setting", "seeds within 1%", "epochs to within 1% (median [IQR])"], rows))
    body = "\n\n".join(parts)
    write_section("portfolio", "The parts of rung-tpe alone and together", body, stamp, out_path(args.out))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
