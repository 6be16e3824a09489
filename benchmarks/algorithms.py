"""The ``algorithm`` choices and the peers side by side on the recorded grids, and the goals for ``auto``.

    .venv/bin/python -m benchmarks.algorithms                      # writes its section of BENCHMARKS.md
    .venv/bin/python -m benchmarks.algorithms --smoke --out /tmp/B.md   # seconds: tiny sizes

Grids: the recorded ones (benchmarks/data/curves_*.json.gz: triplet, symmetric) and one made from the
real-data corpus (benchmarks/data/real_curves.json.gz, ``--real``: by default the MLP on the 8x8
digits, ``real_grid``). Per grid and per number of trials at a time (``--concurrency``, 2 and 8), with
the same seeds and the same epoch budget:

- every ``algorithm`` (random, tpe, rung-tpe, auto) through the product's searcher and scheduler
  (benchmarks.simulate.hpsearch, study in memory);
- the peers: random search without pruning, stock Ray ASHA + OptunaSearch, and Optuna alone (TPE +
  HyperbandPruner; at k trials at a time, k workers sharing its study: simulate.optuna_workers).

Figures per strategy: seeds within 1% of the grid's best healthy config inside the budget, the epochs
to get there, their ratio to Optuna alone and to random search's exact expectation, the objective of
the returned config at 4, 8, 16 and 32 runs, broken configs returned as best, and how often the
returned config is at least as good as not searching (the grid's warm-start points, trained for the
full budget). ``auto`` also runs with those warm-start points given, for the "never worse than not
searching" goal. Then the goals table for ``auto`` and, as before, stopping a converged search.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import simulate
from benchmarks.common import Stamp, command_line, fmt, log, out_path, quantiles, quiet_worker, table, write_section
from benchmarks.curves import CurveSet, default_paths
from benchmarks.figures import iqr_text, random_expectation, ratio, target_value
from benchmarks.grids import REAL_DEFAULT, grid, hit_share, simulate_points, title, warm_value, within
from benchmarks.traces import Trace
from hpsearch.core.config import ALGORITHMS, AUTO_ALGORITHM
from hpsearch.core.objective import score

CHOICES = tuple(a for a in ALGORITHMS if a != "auto")
PEERS = {"peer-random": "random search, no pruning", "peer-asha": "ASHA + OptunaSearch, no health rules",
         "peer-optuna": "Optuna alone (TPE + HyperbandPruner)"}
STRATEGIES = (*CHOICES, "auto", *PEERS)
RUNS_AT = (4, 8, 16, 32)        # fixed budgets, in full-length runs
CONVERGE = (0, 5, 10)           # budget.converge_after values compared (auto), 0: off
MIN_RUNS = 64                   # the budget floor, in full runs (as benchmarks.replay)

# the goals for ``auto`` (issue 14)
GOAL_X_OPTUNA = 0.5
GOAL_X_RANDOM = 0.2
GOAL_HITS = 45 / 50
GOAL_NEVER_WORSE = 0.95

CACHED = 0                      # searches the last run_jobs took from its cache


def runs_for(share: float) -> int:
    """The budget of a grid in full runs: what random search needs at ``share`` (the chance a draw
    lands within 1%), at least MIN_RUNS."""
    return max(MIN_RUNS, math.ceil(1 / share)) if share > 0 else MIN_RUNS


# -- one search ----------------------------------------------------------------------------------

Job = tuple[str, str, int, int, int, int, bool]   # grid, strategy, seed, budget, concurrency, converge_after, warm


def replay(curves: CurveSet, strategy: str, seed: int, budget: int, concurrency: int, converge_after: int = 0,
           warm: bool = False) -> Trace:
    """One replayed search on ``curves``: an ``algorithm`` through the product's searcher and scheduler
    (study in memory; the grid's warm-start points first with ``warm``), or a peer of PEERS."""
    if strategy in PEERS:
        kind = strategy.split("-", 1)[1]
        return simulate.STRATEGIES[kind](curves, seed, budget, concurrency=concurrency)
    return simulate.hpsearch(curves, seed, budget, storage="memory", concurrency=concurrency, algorithm=strategy,
                             converge_after=converge_after, warm_start=simulate_points(curves) if warm else ())


def _job(job: Job) -> tuple[Job, dict[str, Any]]:
    quiet_worker()
    name, strategy, seed, budget, concurrency, converge_after, warm = job
    curves = grid(name)
    trace = replay(curves, strategy, seed, budget, concurrency, converge_after, warm)
    _, best = curves.best_final()
    E = curves.epochs
    final = trace.returned_at(budget)
    at = {}
    for runs in RUNS_AT:
        found = trace.returned_at(runs * E) if runs * E <= budget else None
        at[runs] = found[2] if found is not None else math.nan
    return job, {"to_target": trace.epochs_to(target_value(best, curves.mode), curves.mode),
                 "at": at, "returned": final[2] if final is not None else math.nan,
                 "broken": final is not None and curves.broken(final[0]),
                 "label": curves.label(final[0]) if final is not None else "",
                 "spent": trace.spent, "trials": len(trace.trials)}


def run_jobs(jobs: Sequence[Job], workers: int, cache: str | None = None) -> list[tuple[Job, dict[str, Any]]]:
    """Every job's result, in ``workers`` processes. With ``cache`` (a JSON-lines file), the results
    already there are reused and each new one is appended as it comes: a run cut short goes on where
    it stopped (the same code and seeds give the same result)."""
    done: dict[str, dict[str, Any]] = {}
    if cache and os.path.exists(cache):
        with open(cache, encoding="utf-8") as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    key, value = json.loads(line)
                    value["at"] = {int(k): v for k, v in value["at"].items()}
                    done[key] = value
    todo = [job for job in jobs if json.dumps(job) not in done]
    global CACHED
    CACHED = len(jobs) - len(todo)
    log(f"{len(jobs)} searches, {len(jobs) - len(todo)} from the cache, {len(todo)} to run in {workers} process(es)")
    sink = open(cache, "a", encoding="utf-8") if cache else None
    try:
        if workers <= 1:        # in this process: no fork of a process that may hold Ray's threads
            stream = map(_job, todo)
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers)
            stream = pool.imap_unordered(_job, todo, chunksize=1)
        for count, (job, value) in enumerate(stream, 1):
            done[json.dumps(job)] = value
            if sink is not None:
                sink.write(json.dumps([json.dumps(job), value]) + "\n")
                sink.flush()
            if count % 100 == 0:
                log(f"{count} / {len(todo)}")
        if workers > 1:
            pool.close()
            pool.join()
    finally:
        if sink is not None:
            sink.close()
    return [(job, done[json.dumps(job)]) for job in jobs]


# -- figures ---------------------------------------------------------------------------------------

def figures(results: Sequence[tuple[Job, dict[str, Any]]], warm_values: Mapping[str, float],
            modes: Mapping[str, str]) -> dict[tuple, dict[str, Any]]:
    """Per (grid, strategy, concurrency, converge_after, warm): the figures over seeds."""
    by: dict[tuple, list[dict[str, Any]]] = {}
    for (name, strategy, _, _, concurrency, after, warm), value in results:
        by.setdefault((name, strategy, concurrency, after, warm), []).append(value)
    out = {}
    for key, values in by.items():
        mode, default = modes[key[0]], warm_values[key[0]]
        to_target = [v["to_target"] for v in values]
        returned = [v["returned"] for v in values]
        finite = [r for r in returned if score(r, mode) > -math.inf]
        labels: dict[str, int] = {}
        for v in values:
            if v["broken"]:
                labels[v["label"]] = labels.get(v["label"], 0) + 1
        out[key] = {
            "seeds": len(values), "to_target": to_target, "median": quantiles(to_target, (50,))[0],
            "hits": sum(1 for e in to_target if math.isfinite(e)),
            "at": {r: [v["at"][r] for v in values] for r in RUNS_AT},
            "returned": quantiles(finite, (50,))[0] if finite else math.nan,
            "broken": sum(labels.values()), "broken_labels": labels,
            "never_worse": (sum(1 for r in returned if score(r, mode) >= score(default, mode))
                            if math.isfinite(default) else None),
            "spent": quantiles([v["spent"] for v in values], (50,))[0],
            "trials": quantiles([v["trials"] for v in values], (50,))[0],
        }
    return out


def median_of(values: Sequence[float], mode: str) -> float:
    finite = [v for v in values if score(v, mode) > -math.inf]
    return quantiles(finite, (50,))[0] if finite else math.nan


def at_text(values: Sequence[float], mode: str) -> str:
    finite = [v for v in values if score(v, mode) > -math.inf]
    if not finite:
        return "n/a"
    missing = len(values) - len(finite)
    return fmt(quantiles(finite, (50,))[0]) + (f" ({missing} none)" if missing else "")


def strategy_title(strategy: str) -> str:
    if strategy == "auto":
        return f"auto (= {AUTO_ALGORITHM})"
    return PEERS.get(strategy, strategy)


def grid_tables(name: str, concurrency: int, found: dict[tuple, dict[str, Any]], budget: int, share: float,
                how: str, default: float) -> tuple[str, list[list[str]]]:
    """The table of one grid at one concurrency, and the goal rows for ``auto`` there."""
    curves = grid(name)
    mode, E = curves.mode, curves.epochs
    expected = random_expectation(share, E, slots=concurrency)
    optuna_median = found[(name, "peer-optuna", concurrency, 0, False)]["median"]
    rows = []
    for strategy in STRATEGIES:
        f = found[(name, strategy, concurrency, 0, False)]
        broken = str(f["broken"])
        if f["broken_labels"]:
            broken += " (" + ", ".join(f"{k} {v}" for k, v in sorted(f["broken_labels"].items())) + ")"
        worse = "-" if f["never_worse"] is None else f"{f['never_worse']}/{f['seeds']}"
        rows.append([strategy_title(strategy) + (" (peer)" if strategy in PEERS else ""),
                     f"{f['hits']}/{f['seeds']}", iqr_text(f["to_target"]),
                     ratio(f["median"], optuna_median, budget)[1], ratio(f["median"], expected[1], math.inf)[1],
                     *[at_text(f["at"][r], mode) if r * E <= budget else "-" for r in RUNS_AT],
                     fmt(f["returned"]), broken, worse])
    rows.append([f"random search, exact expectation (p = {share:.4f} a draw, {how})", "-",
                 f"{fmt(expected[1])} [{fmt(expected[0])}, {fmt(expected[2])}]", "-", "1",
                 *["-" for _ in RUNS_AT], "-", "-", "-"])
    text = table(["strategy", "seeds within 1%", "epochs to within 1% (median [IQR])", "x Optuna alone",
                  "x random (exact expectation)", *[f"objective at {r} runs" for r in RUNS_AT],
                  f"objective at {budget} epochs", "broken returned as best",
                  "returned >= not searching (no warm start)"], rows)

    auto = found[(name, "auto", concurrency, 0, False)]
    seeds = auto["seeds"]
    goals = []
    x_opt, x_opt_text = ratio(auto["median"], optuna_median, budget)
    x_rnd, x_rnd_text = ratio(auto["median"], expected[1], math.inf)
    goals.append(["epochs to within 1% / Optuna alone", x_opt_text, f"<= {GOAL_X_OPTUNA}",
                  mark(x_opt <= GOAL_X_OPTUNA, x_opt)])
    goals.append(["epochs to within 1% / random search (exact expectation)", x_rnd_text, f"<= {GOAL_X_RANDOM}",
                  mark(x_rnd <= GOAL_X_RANDOM, x_rnd)])
    goals.append(["seeds within 1% inside the budget", f"{auto['hits']}/{seeds}",
                  f">= {math.ceil(GOAL_HITS * seeds)}/{seeds}", mark(auto["hits"] >= GOAL_HITS * seeds)])
    short = []
    for r in RUNS_AT:
        if r * E > budget:
            continue
        mine = median_of(auto["at"][r], mode)
        peer_medians = {p: median_of(found[(name, p, concurrency, 0, False)]["at"][r], mode) for p in PEERS}
        top = max(peer_medians.values(), key=lambda v: score(v, mode))
        if not score(mine, mode) >= score(top, mode):
            short.append(f"{r} runs: {fmt(mine)} < {fmt(top)}")
    goals.append(["objective at 4, 8, 16, 32 runs >= the best peer's median",
                  "; ".join(short) if short else "at or above at every budget", "every budget",
                  mark(not short)])
    goals.append(["broken config returned as best", f"{auto['broken']}/{seeds}", "0", mark(auto["broken"] == 0)])
    warm = found.get((name, "auto", concurrency, 0, True))
    if warm is None or warm["never_worse"] is None:
        goals.append(["never worse than not searching (warm-start points given)", "not measured", ">= 95%",
                      "not measured"])
    else:
        share_ok = warm["never_worse"] / warm["seeds"]
        goals.append([f"never worse than not searching: returned >= best warm-start point at full budget "
                      f"({fmt(default)}), warm-start points given",
                      f"{warm['never_worse']}/{warm['seeds']}", f">= {GOAL_NEVER_WORSE:.0%}",
                      mark(share_ok >= GOAL_NEVER_WORSE)])
    return text, [[title(name), str(concurrency), *g] for g in goals]


def mark(ok: bool, value: float | None = None) -> str:
    if ok:
        return "met"
    if value is not None and math.isinf(value):
        return "missed (never reached)"
    return "missed"


# -- the run -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--runs", type=float, default=None,
                        help="epoch budget in full-length runs (default: 64, or what random search needs on "
                             "average to land within 1%% of the best where more, as benchmarks.replay)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 8], help="trials at a time")
    parser.add_argument("--real", default=REAL_DEFAULT,
                        help="MODEL:DATASET of the real-data corpus made a grid ('' for none)")
    parser.add_argument("--converge-seeds", type=int, default=None, dest="converge_seeds",
                        help="seeds for the converge_after table (default --seeds; 0: none)")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--cache", help="JSON-lines file of finished searches, reused and appended to")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: 2 seeds, 8 runs, 1 process")
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.runs, args.workers = 2, 8.0, 1
    converge_seeds = args.seeds if args.converge_seeds is None else args.converge_seeds
    stamp = Stamp(command_line("benchmarks.algorithms", argv))
    names = [str(p) for p in default_paths()]
    if args.real:
        names.append("real:" + args.real)
    budgets, shares, defaults, modes = {}, {}, {}, {}
    for name in names:
        curves = grid(name)
        shares[name] = hit_share(curves, draws=2000 if args.smoke else 20_000)
        runs = args.runs if args.runs is not None else runs_for(shares[name][0])
        budgets[name] = int(round(runs * curves.epochs))
        defaults[name], modes[name] = warm_value(curves), curves.mode
    # seed by seed: a run stopped part way (``--cache``) holds whole seeds, every strategy alike
    jobs: list[Job] = []
    for seed in range(max(args.seeds, converge_seeds)):
        for name in names:
            if seed < args.seeds:
                for c in args.concurrency:
                    jobs += [(name, s, seed, budgets[name], c, 0, False) for s in STRATEGIES]
                    jobs.append((name, "auto", seed, budgets[name], c, 0, True))
            if seed < converge_seeds:
                jobs += [(name, "auto", seed, budgets[name], args.concurrency[0], after, False)
                         for after in CONVERGE if after]
    began = time.perf_counter()
    results = run_jobs(jobs, args.workers, args.cache)
    log(f"done in {time.perf_counter() - began:.0f} s")
    found = figures(results, defaults, modes)

    parts, goal_rows = [], []
    for name in names:
        curves = grid(name)
        best_i, best = curves.best_final()
        hits = within(curves)
        E = curves.epochs
        parts.append(f"### {title(name)}\n\n{len(curves)} configs x {E} epochs "
                     f"({curves.data.get('recorded', {}).get('scale', '?')}); best final {curves.metric} among "
                     f"unbroken configs {fmt(best)} ({curves.describe(best_i)}); within 1%: {len(hits)} configs. "
                     f"Budget {budgets[name]} epochs ({budgets[name] / E:g} runs) per search. Not searching "
                     f"(the best of the grid's {len(simulate_points(curves))} warm-start point(s), full budget): "
                     f"{fmt(defaults[name])}.")
        for c in args.concurrency:
            text, goals = grid_tables(name, c, found, budgets[name], shares[name][0], shares[name][1], defaults[name])
            parts.append(f"{c} trials at a time:\n\n{text}")
            goal_rows += goals
    goals_text = table(["grid", "trials at a time", "goal (auto)", "measured", "target", "status"], goal_rows)

    crow = []
    c = args.concurrency[0]
    for name in names:
        if not converge_seeds:
            break
        off = found[(name, "auto", c, 0, False)]
        for after in CONVERGE:
            f = found[(name, "auto", c, after, False)]
            crow.append([title(name), after or "off", fmt(f["spent"]),
                         f"{1 - f['spent'] / off['spent']:.0%}" if off["spent"] else "-", fmt(f["returned"]),
                         fmt(f["returned"] - off["returned"]), f"{f['hits']} / {f['seeds']}"])

    intro = (
        f"{args.seeds} seeds per strategy, the same seeds and budget for every strategy on a grid; "
        f"{' and '.join(str(c) for c in args.concurrency)} trials at a time (the replay's epoch clock, "
        "benchmarks/simulate.py). Algorithms run the product's searcher, ASHA scheduler and health "
        "verdicts (study in memory); `auto` runs "
        f"`{AUTO_ALGORITHM}` (hpsearch.core.config.AUTO_ALGORITHM). Peers as in the replay section, Optuna "
        "alone with as many workers sharing its study as trials at a time. Epochs to within 1%: epochs "
        "spent when the returned config first scored within 1% of the grid's best unbroken config; "
        "never = not inside the budget. Ratios: medians (\"< x\": the other never got there, bounded by the "
        "budget). Objective at N runs: median over seeds of the config returned after N full runs' epochs. "
        "\"Returned >= not searching\": seeds whose final returned config scores at least the grid's best "
        "warm-start point trained for the full budget, the search not given those points.\n\n"
        "The real-data grid is the corpus's MLP on the 8x8 digits: of the corpus's real-data curves it has "
        "the finest objective (450 validation rows, steps of 0.0022; iris, wine and breast cancer have 38 "
        "to 143, where many configs tie at the top) and no fewer than 15 epochs per run. Each run is a "
        "candidate, cut to its first 15 epochs (its schedule's horizon, `epochs`, stays a searched "
        "parameter); weight_decay 0 is placed at 1e-6, the bottom of its log range; its chance per random "
        "draw comes from seeded draws since the candidates are not a full grid. Its warm-start point is "
        "the model's defaults (benchmarks.byo.Params), replayed as its nearest candidate. Noisy "
        "objectives: not measured; each grid point has one recorded curve, so the replay has no noise to "
        "draw.")
    if CACHED:
        intro += (f"\n\n{CACHED} of the {len(jobs)} searches were read from `--cache` (finished by an "
                  "earlier run of the same code and seeds; the date above is this run's).")
    body = intro + "\n\n" + "\n\n".join(parts)
    body += "\n\n### Goals for `auto`\n\n" + goals_text
    if crow:
        body += (f"\n\nStopping a converged search (`budget.converge_after`, `auto`, {c} trials at a time, "
                 f"{converge_seeds} seeds, same budget):\n\n")
        body += table(["grid", "converge_after", "median epochs spent", "epochs saved", "median objective returned",
                       "objective lost (median)", "seeds within 1% of the best"], crow)
    print(body)
    write_section("algorithms", "Algorithms on the recorded grids", body, stamp, out_path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
