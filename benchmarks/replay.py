"""Search efficiency on recorded curves: hpsearch against random search, plain ASHA and Optuna alone.

    .venv/bin/python -m benchmarks.replay                  # all recorded models, writes BENCHMARKS.md
    .venv/bin/python -m benchmarks.replay --seeds 10 --no-sweep

For every recorded model (benchmarks/data/curves_*.json.gz, see record_curves.py) and every seed,
each strategy of benchmarks.simulate searches the recorded grid with the same epoch budget; the
figures (benchmarks.figures) are then taken over seeds. Seeds run in ``--workers`` processes.
A sweep of ASHA's grace period and reduction factor (hpsearch, fewer seeds) shows which rung
settings the curves favour.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from typing import Any

from benchmarks.common import Stamp, command_line, fmt, out_path, table, verdict, write_section
from benchmarks.curves import CurveSet, default_paths
from benchmarks.figures import iqr_text, median_value, random_expectation, ratio, summarise, target_value
from hpsearch.core.objective import score, sign

ORDER = ("hpsearch", "hpsearch_serial", "random", "asha", "optuna")
SWEEP = ((1, 2.0), (1, 3.0), (2, 2.0), (2, 3.0), (3, 2.0), (3, 3.0), (1, 4.0))
_CACHE: dict[str, CurveSet] = {}


def _curves(path: str) -> CurveSet:
    if path not in _CACHE:
        _CACHE[path] = CurveSet.load(path)
    return _CACHE[path]


def _job(job: tuple[str, str, int, int, tuple | None, str]) -> tuple[tuple, Any, float]:
    import warnings

    import optuna

    from benchmarks import simulate

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path, strategy, seed, budget, rungs, storage = job
    curves = _curves(path)
    started = time.perf_counter()
    if rungs is not None:
        trace = simulate.hpsearch(curves, seed, budget, grace=rungs[0], reduction=rungs[1],
                                  name=f"grace {rungs[0]}, reduction factor {rungs[1]:g}", storage=storage)
    elif strategy == "hpsearch":
        trace = simulate.hpsearch(curves, seed, budget, storage=storage)
    elif strategy == "hpsearch_serial":  # as Optuna alone runs: one trial at a time
        trace = simulate.hpsearch(curves, seed, budget, storage=storage, concurrency=1,
                                  name="hpsearch, 1 trial at a time")
    else:
        trace = simulate.STRATEGIES[strategy](curves, seed, budget)
    return job, trace, time.perf_counter() - started


def _warm() -> None:
    """Import what the searches use before any is timed."""
    import logging

    import ray.tune.schedulers  # noqa: F401
    import ray.tune.search.optuna  # noqa: F401

    import hpsearch.tune.scheduler  # noqa: F401
    import hpsearch.tune.searcher  # noqa: F401

    logging.getLogger("ray").setLevel(logging.ERROR)


def run_jobs(jobs: list[tuple], workers: int) -> list[tuple]:
    if workers <= 1:
        _warm()
        return [_job(j) for j in jobs]
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_warm) as pool:
        return list(pool.imap(_job, jobs, chunksize=1))


def same_decisions(a: Any, b: Any) -> bool:
    """Two traces of one search made the same decisions: same grid points, epochs, outcomes, returns."""
    key = [(t.index, t.epochs, t.outcome) for t in a.trials]
    return key == [(t.index, t.epochs, t.outcome) for t in b.trials] and a.incumbents == b.incumbents


DEFAULT_RUNS = 64


def search_runs(curves: Any, floor: float) -> float:
    """Full runs per search: ``floor``, or the runs random search needs on average to land within 1%
    of the grid's best (1 / the share of configs there) where that is more: a grid whose best is
    nearly alone gets a budget in which every strategy can find it, so the medians compare."""
    mode = curves.mode
    target = target_value(curves.best_final()[1], mode)
    p_hit = curves.mass([i for i in range(len(curves)) if score(curves.final(i), mode) >= score(target, mode)])
    return max(floor, float(math.ceil(1 / p_hit))) if p_hit > 0 else floor


def model_section(path: str, results: list[tuple], sweep: list[tuple], budget: int, seeds: int,
                  shipped: list[tuple]) -> tuple[str, dict]:
    curves = _curves(path)
    mode, E = curves.mode, curves.epochs
    best_i, best = curves.best_final()
    target = target_value(best, mode)
    labels: dict[str, int] = {}
    for i in range(len(curves)):
        labels[curves.label(i)] = labels.get(curves.label(i), 0) + 1
    budgets = sorted({b for b in (2 * E, 4 * E, 8 * E, 16 * E, 32 * E, budget) if b <= budget})

    def is_broken(trace: Any, index: int) -> bool:
        return curves.broken(index)

    def label_of(trace: Any, index: int) -> str:
        return curves.label(index)

    by_strategy: dict[str, list] = {}
    seconds: dict[str, float] = {}
    titles: dict[str, str] = {}
    for (_, strategy, _, _, _, _), trace, secs in results:
        by_strategy.setdefault(strategy, []).append(trace)
        seconds[strategy] = seconds.get(strategy, 0.0) + secs
        titles[strategy] = trace.strategy
    figures = {key: summarise(traces, best, mode, budgets, is_broken, label_of) for key, traces in by_strategy.items()}
    names = [k for k in ORDER if k in by_strategy]
    hp, rnd, opt = "hpsearch", "random", "optuna"

    within = [i for i in range(len(curves)) if score(curves.final(i), mode) >= score(target, mode)]
    p_hit = curves.mass(within)
    expected = random_expectation(p_hit, E, slots=2)
    random_median = expected[1]
    opt_median = figures[opt]["median"]
    rows = []
    for name in names:
        f = figures[name]
        broken = f"{f['broken']} of {f['seeds']}"
        if f["broken_labels"]:
            broken += " (" + ", ".join(f"{k} {v}" for k, v in sorted(f["broken_labels"].items())) + ")"
        ms = seconds[name] / f["seeds"] / max(f["trials"], 1) * 1000
        rows.append([titles[name], iqr_text(f["to_target"]), f"{f['reached']}/{f['seeds']}",
                     ratio(f["median"], random_median, budget)[1], ratio(f["median"], opt_median, budget)[1],
                     broken, fmt(f["trials"]), fmt(f["epochs_per_trial"]), f"{ms:.0f}"])
    rows.append([f"random search, no pruning: exact expectation (a draw lands within 1% with p = {p_hit:.4f})",
                 f"{fmt(expected[1])} [{fmt(expected[0])}, {fmt(expected[2])}]", "-", "1", "-", "-", "-",
                 str(E), "-"])
    main_table = table(["strategy", f"epochs to within 1% of best (median [IQR]; never = not within {budget})",
                        "seeds that got there", "x random (expected)", "x Optuna alone",
                        "broken config returned as best", "trials per search", "epochs per trial",
                        "searcher + scheduler ms per trial (replay)"], rows)
    budget_rows = [[titles[name]] + [median_value(figures[name]["at_budget"][b], mode) for b in budgets] for name in names]
    budget_table = table(["strategy"] + [f"{b} epochs ({b / E:g} runs)" for b in budgets], budget_rows)

    r_random, t_random = ratio(figures[hp]["median"], random_median, math.inf)
    r_sim, t_sim = ratio(figures[hp]["median"], figures[rnd]["median"], budget)
    r_optuna, t_optuna = ratio(figures[hp]["median"], opt_median, budget)
    targets = [
        ["epochs to within 1%: hpsearch / random search without pruning (exact expectation)", t_random,
         "<= 0.25", verdict(r_random, 0.25)],
        ["the same against the simulated random searches", t_sim, "<= 0.25", verdict(r_sim, 0.25)],
        ["epochs to within 1%: hpsearch / Optuna + HyperbandPruner", t_optuna, "<= 1.0", verdict(r_optuna, 1.0)],
        ["broken config returned as best by hpsearch", f"{figures[hp]['broken']} of {figures[hp]['seeds']}", "0",
         verdict(float(figures[hp]["broken"]), 0.0)],
    ]
    grid_text = ", ".join(f"{n}: {' / '.join(fmt(v) if isinstance(v, float) else str(v) for v in lv)}"
                          for n, lv in curves.grid.items())
    rec = curves.data.get("recorded", {})
    lines = [
        f"### {curves.model}",
        "",
        f"Grid: {len(curves)} configs x {E} epochs ({grid_text}); recorded {rec.get('date', '?')[:10]} at "
        f"{rec.get('scale', '?')} in {fmt(float(rec.get('seconds', math.nan)))} s with {rec.get('workers', '?')} "
        f"processes x 1 thread. Fixed labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) + ".",
        f"Best final {curves.metric} among unbroken configs: {fmt(best)} ({curves.describe(best_i)}); within 1% "
        f"means {'>=' if sign(mode) > 0 else '<='} {fmt(target)}",
        f"({len(within)} of {len(curves)} configs, {len(within) / len(curves):.1%}). Budget {budget} epochs "
        f"({budget / E:g} full runs) per search, {seeds} seeds; Tune strategies run 2 trials at a time (2 CPUs, "
        f"1 per trial) unless named otherwise, Optuna alone one at a time. ASHA: grace {curves.run.scheduler.grace_period}, "
        f"reduction factor {curves.run.scheduler.reduction_factor:g}, max_t {E}.",
        "",
        main_table,
        "",
        f"Objective of the returned config at fixed budgets (median [IQR] over seeds; {curves.metric}, {mode}):",
        "",
        budget_table,
        "",
        table(["target", "measured", "target", ""], targets),
    ]
    if shipped:
        by_seed = {seed: trace for (_, _, seed, _, _, _), trace, _ in results if trace.strategy == "hpsearch"}
        same = sum(1 for (_, _, seed, _, _, _), trace, _ in shipped if same_decisions(trace, by_seed[seed]))
        ms_shipped = sum(secs / len(trace.trials) for _, trace, secs in shipped) / len(shipped) * 1000
        ms_memory = seconds["hpsearch"] / figures["hpsearch"]["seeds"] / max(figures["hpsearch"]["trials"], 1) * 1000
        lines += ["", f"The hpsearch searches above keep the Optuna study in memory "
                  f"(benchmarks.simulate.study_in_memory); the storage decides nothing. The first "
                  f"{len(shipped)} seeds were also run with the study in the journal file as shipped: {same} of "
                  f"{len(shipped)} made exactly the same decisions; there the searcher and scheduler took "
                  f"{ms_shipped:.0f} ms of driver CPU per trial against {ms_memory:.0f} ms in memory."]
    if sweep:
        sweep_by: dict[str, list] = {}
        for _, trace, _ in sweep:
            sweep_by.setdefault(trace.strategy, []).append(trace)
        srows = []
        for name, traces in sweep_by.items():
            f = summarise(traces, best, mode, budgets, is_broken, label_of)
            srows.append([name, iqr_text(f["to_target"]), f"{f['reached']}/{f['seeds']}",
                          median_value(f["at_budget"][budgets[0]], mode), f"{f['broken']}", fmt(f["epochs_per_trial"])])
        lines += ["", f"ASHA rungs: hpsearch with other grace periods and reduction factors "
                  f"({len(next(iter(sweep_by.values())))} seeds each, study in memory):", "",
                  table(["hpsearch with", "epochs to within 1%", "got there", f"objective at {budgets[0]} epochs",
                         "broken returned", "epochs per trial"], srows)]
    return "\n".join(lines), {"random": r_random, "optuna": r_optuna, "broken": figures[hp]["broken"]}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", nargs="*", help="curve files (default: benchmarks/data/curves_*.json.gz)")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--budget-runs", type=float, default=None, dest="budget_runs",
                        help="epoch budget per search, in full runs (x the recorded epochs); default 64, or "
                             "what random search needs on average to land within 1%% of the best where more")
    parser.add_argument("--sweep-seeds", type=int, default=30, dest="sweep_seeds",
                        help="seeds per ASHA setting in the rung sweep (0: no sweep)")
    parser.add_argument("--shipped-seeds", type=int, default=3, dest="shipped_seeds",
                        help="seeds also run with the study in its journal file, as shipped, to check the decisions match")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    stamp = Stamp(command_line("benchmarks.replay", argv))
    paths = [str(p) for p in (args.curves if args.curves is not None else default_paths())]
    if not paths:
        raise SystemExit("no recorded curves: run `python -m benchmarks.record_curves MODEL` first")
    sections, verdicts = [], {}
    for path in paths:
        curves = _curves(path)
        runs = args.budget_runs if args.budget_runs is not None else search_runs(curves, DEFAULT_RUNS)
        budget = int(round(runs * curves.epochs))
        jobs = [(path, s, seed, budget, None, "memory") for s in ORDER for seed in range(args.seeds)]
        shipped_jobs = [(path, "hpsearch", seed, budget, None, "journal") for seed in range(min(args.shipped_seeds, args.seeds))]
        sweep_jobs = [(path, "hpsearch", seed, budget, rungs, "memory") for rungs in SWEEP if rungs[0] <= curves.epochs
                      for seed in range(args.sweep_seeds)]
        began = time.perf_counter()
        done = run_jobs(jobs + shipped_jobs + sweep_jobs, args.workers)
        print(f"{curves.model}: {len(done)} searches in {time.perf_counter() - began:.0f} s", flush=True)
        n, m = len(jobs), len(jobs) + len(shipped_jobs)
        text, verdicts[curves.model] = model_section(path, done[:n], done[m:], budget, args.seeds, done[n:m])
        sections.append(text)
    intro = (
        "Each search replays recorded epochs instead of training: a suggested config gets the curve of "
        "the nearest grid point. hpsearch runs the real `make_searcher` (HealthOptunaSearch, TPE "
        "multivariate), `make_scheduler` (HealthASHA) and the trainable's verdict "
        "(`hpsearch.core.health.assess`), driven in-process in Tune's call order (benchmarks/simulate.py; "
        "benchmarks/replay_tune.py checks the same decisions come out of a real `Tuner`). Ray's "
        "per-trial cost would make these hundreds of searches take hours. Baselines: random search "
        "(every trial to the end), stock Ray ASHA + OptunaSearch (same TPE settings, no health rules), "
        "and Optuna alone (study.optimize, TPE + HyperbandPruner). Returned config: hpsearch's export "
        "rule (best checkpointed epoch of a completed or ASHA-stopped trial), Ray's "
        "`get_best_result()` (last value, NaN filtered) for the Ray baselines, `study.best_trial` for "
        "Optuna. No warm-start points.")
    write_section("replay", "Search efficiency on recorded curves", intro + "\n\n" + "\n\n".join(sections),
                  stamp, out_path(args.out))
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
