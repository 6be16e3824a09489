"""Live search efficiency: every algorithm and the peers on real training, against the replay.

    .venv/bin/python -m benchmarks.live                         # both data sets; writes its section of BENCHMARKS.md
    .venv/bin/python -m benchmarks.live --data real:mlp:digits  # one data set
    .venv/bin/python -m benchmarks.live --seeds 1 --budget-runs 2 --out /tmp/B.md --set epochs=2 \\
        --set budget.max_epochs=2 --set scheduler.grace_period=1 --set triplet@samples_per_class=20 \\
        --set real:mlp:digits@val_fraction=0.9                  # a minute or two: tiny sizes

Data sets (``--data``, default both): ``triplet``, the quickstart search (configs/quickstart.yaml
without its warm-start points) replayed on benchmarks/data/curves_triplet.json.gz (``--curves``);
``real:mlp:digits``, the search benchmarks.grids.real_grid makes from the real-data corpus (the MLP
classifier of benchmarks.byo on the 8x8 digits, its space, objective and epochs, without its
warm-start point) replayed on that grid. Per data set and seed, with the same epoch budget
(``--budget-runs`` full-length runs):

- every ``algorithm`` (random, tpe, rung-tpe; ``auto`` is hpsearch.core.config.AUTO_ALGORITHM, so its
  row is that algorithm's) through the product's searcher and scheduler (make_searcher, make_scheduler);
- the peers: random search without pruning and stock ASHA + OptunaSearch, each with its own searcher
  and scheduler, and Optuna alone (TPE + HyperbandPruner), trained in this process one trial at a time.

The Ray strategies run on one local Ray through ``hpsearch.driver.runner.make_tuner`` (the assembly
``hpsearch run`` uses: the real trainable, actor reuse, checkpoints), every trial slot filled; a
search asks for no new trial once the budget is spent (running trials finish; epochs past the budget
are not counted). Then the replay (benchmarks.algorithms.replay) runs the same strategies, seeds and
budget on the data set's grid at the same number of trials at a time, and both are shown side by
side with whether the rankings agree (Kendall's tau over the strategies' median returned objective,
and the top strategy). ``--set [DATA@]KEY=VALUE`` overrides a setting of every data set's search,
or of DATA's only.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.algorithms import CHOICES, PEERS, median_of, replay
from benchmarks.common import DATA, Stamp, command_line, fmt, log, out_path, table, write_section
from benchmarks.curves import BROKEN, CurveSet, label_rows
from benchmarks.figures import median_value, summarise
from benchmarks.grids import REAL_DEFAULT, grid, title
from benchmarks.simulate import suggest_params
from benchmarks.traces import Trace, TrialRecord, export_rule, ray_rule
from hpsearch.core.config import AUTO_ALGORITHM
from hpsearch.core.objective import direction, is_better, score

ORDER = (*CHOICES, *PEERS)
DATASETS = ("triplet", "real:" + REAL_DEFAULT)
TITLES = {**{a: f"hpsearch, algorithm: {a}" + (" (= auto)" if a == AUTO_ALGORITHM else "") for a in CHOICES},
          **{p: f"{PEERS[p]} (peer)" for p in PEERS}}
AGREE_TAU = 0.5       # the rankings agree: Kendall's tau at least this, and the same top strategy


def searcher_and_scheduler(strategy: str, plan: Any, outcomes: Any, seed: int, slots: int) -> tuple[Any, Any]:
    """The searcher (at most ``slots`` trials at once, as ``hpsearch run`` limits its own) and the
    scheduler of a strategy; an algorithm's is the plan's (``algorithm`` set in its config)."""
    import numpy as np
    import optuna
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from hpsearch.tune.scheduler import make_scheduler
    from hpsearch.tune.searcher import make_searcher

    run = plan.config
    space = {name: spec.to_optuna() for name, spec in run.space.items()}
    metric, mode = run.objective.metric, run.objective.mode
    if strategy in CHOICES:
        return make_searcher(run, plan.run_dir, outcomes, max_concurrent=slots), make_scheduler(run, outcomes)
    if strategy == "peer-random":
        sampler, scheduler = optuna.samplers.RandomSampler(seed=seed), FIFOScheduler()
    else:
        np.random.seed(seed)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
        scheduler = AsyncHyperBandScheduler(time_attr="training_iteration", metric=metric, mode=mode,
                                            max_t=run.max_epochs, grace_period=run.scheduler.grace_period,
                                            reduction_factor=run.scheduler.reduction_factor)
    searcher = OptunaSearch(space, metric=metric, mode=mode, sampler=sampler)
    return ConcurrencyLimiter(searcher, max_concurrent=slots), scheduler


def ray_search(strategy: str, config: Path, work: Path, seed: int, budget: int) -> tuple[Trace, dict, float]:
    """One live search through Ray; (trace, trial_id -> rows, wall seconds)."""
    from hpsearch.core.rundir import OutcomeLog

    sets = [f"seed={seed}", "budget.num_samples=100000"] + ([f"algorithm={strategy}"] if strategy in CHOICES else [])
    plan = harness.plan_for(config, work / "runs", f"{config.stem}-{strategy}-{seed}", sets)
    from hpsearch.driver import runner
    from hpsearch.tune.searcher import inner_searcher

    runner.claim_run_dir(plan)  # as `hpsearch run` does, before the searcher puts its study there
    outcomes = OutcomeLog(plan.run_dir)
    slots = runner.trial_slots(plan.config)  # as `hpsearch run`: every slot filled
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(slots)
    searcher, scheduler = searcher_and_scheduler(strategy, plan, outcomes, seed, slots)
    events = harness.EventLog()
    inner = inner_searcher(searcher) or searcher.searcher
    inner.suggest = harness.BudgetedSuggest(inner.suggest, events.results, budget)
    events, wall = run_logged(plan, searcher, scheduler, outcomes, events)
    rule = export_rule(plan.config.checkpoint.interval, plan.config.max_epochs) if strategy in CHOICES else ray_rule
    trace, rows = trace_from_events(TITLES[strategy], seed, budget, events, outcomes, plan.config, rule)
    return trace, rows, wall


def run_logged(plan: Any, searcher: Any, scheduler: Any, outcomes: Any, events: Any) -> tuple[list, float]:
    from hpsearch.driver import runner
    from hpsearch.tune.progress import OutcomeRecorder
    from hpsearch.tune.searcher import close_open_trials

    tuner = runner.make_tuner(plan, searcher, scheduler, [OutcomeRecorder(outcomes), events])
    began = time.perf_counter()
    try:
        tuner.fit()
    finally:
        close_open_trials(searcher)
    return events.events, time.perf_counter() - began


def trace_from_events(name: str, seed: int, budget: int, events: list, outcomes: Any, run: Any,
                      rule: Any) -> tuple[Trace, dict]:
    trace = Trace(name, seed, budget)
    records: dict[str, TrialRecord] = {}
    rows: dict[str, list[dict]] = {}
    metric, mode = run.objective.metric, run.objective.mode
    for kind, trial_id, result in events:
        if trial_id not in records:
            records[trial_id] = TrialRecord(trial_id, len(records))
            trace.trials.append(records[trial_id])
            rows[trial_id] = []
        record = records[trial_id]
        if kind == "result":
            trace.spent += 1
            record.epochs += 1
            record.values.append(float(result.get(metric, math.nan)))
            rows[trial_id].append(result)
        else:
            entry = outcomes.get(trial_id) if outcomes is not None else None
            record.outcome = entry["outcome"] if entry else ("error" if kind == "error" else "completed")
            found = rule(trace.trials, mode)
            if found is not None and (not trace.incumbents or trace.incumbents[-1][1:] != found):
                trace.incumbents.append((trace.spent, *found))
    return trace, rows


def optuna_live(run: Any, seed: int, budget: int) -> tuple[Trace, dict, float]:
    """Optuna alone on real training in this process (TPE + HyperbandPruner, one trial at a time)."""
    import optuna
    import torch

    from hpsearch import models
    from hpsearch.tune.trainable import trial_seed

    torch.set_num_threads(1)
    trace, rows = Trace(TITLES["peer-optuna"], seed, budget), {}
    metric, mode = run.objective.metric, run.objective.mode
    study = optuna.create_study(direction=direction(mode),
                                study_name=f"optuna-alone-{seed}",   # as the replay names it (simulate.py)
                                sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=run.max_epochs))

    def objective(trial: Any) -> float:
        params = {**run.params, **suggest_params(trial, run.space)}
        record = TrialRecord(str(trial.number), trial.number)
        trace.trials.append(record)
        rows[record.trial_id] = []
        s = trial_seed(seed, trial.number + 1)
        torch.manual_seed(s)
        model = models.build(run.model, params, device="cpu", seed=s)
        value = math.nan
        for epoch in range(1, run.max_epochs + 1):
            row = {**model.train_epoch(), **model.evaluate("val")}
            rows[record.trial_id].append(row)
            value = float(row.get(metric, math.nan))
            record.epochs, trace.spent = epoch, trace.spent + 1
            record.values.append(value)
            trial.report(value, epoch)
            if trial.should_prune():
                record.outcome = "pruned_asha"
                raise optuna.TrialPruned()
        record.outcome = "completed"
        if math.isfinite(value):
            best = study.best_trial if study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) else None
            if best is None or is_better(value, best.value, mode):
                trace.incumbents.append((trace.spent, record.index, epoch, value))
        return value

    def stop(study: Any, _: Any) -> None:
        if trace.spent >= budget:
            study.stop()

    began = time.perf_counter()
    study.optimize(objective, n_trials=100_000, callbacks=[stop])
    return trace, rows, time.perf_counter() - began


# -- data sets -------------------------------------------------------------------------------------

def overrides(name: str, sets: list[str]) -> list[str]:
    """The ``--set`` values for data set ``name``: those without ``DATA@`` and those with its name."""
    out = []
    for text in sets:
        target, at, _ = text.partition("=")[0].partition("@")
        if not at:
            out.append(text)
            continue
        if target != "triplet" and not target.startswith("real:"):
            raise SystemExit(f"--set {text}: {target!r} is no data set; expected triplet@ or real:MODEL:DATASET@")
        if target == name:
            out.append(text.partition("@")[2])
    return out


def data_set(name: str, curves_path: str, sets: list[str]) -> tuple[dict[str, Any], CurveSet, str]:
    """The live search's raw config of data set ``name`` (no warm-start points, ``sets`` applied), the
    grid its replay runs on, and a description."""
    from hpsearch.core.config import apply_overrides

    if name == "triplet":
        raw, curves, what = harness.quickstart(warm_start=[]), CurveSet.load(curves_path), \
            "configs/quickstart.yaml without warm-start points"
    elif name.startswith("real:"):
        curves = grid(name)
        raw, what = {**curves.data["run"], "warm_start": []}, \
            f"the search of benchmarks.grids.real_grid ({curves.data['recorded']['scale']}) without warm-start points"
    else:
        raise SystemExit(f"--data: got {name!r}, expected triplet or real:MODEL:DATASET")
    return apply_overrides(raw, sets), curves, what + (f" with {', '.join(sets)}" if sets else "")


def health_share(traces: list[Trace]) -> str:
    shares = [sum(1 for t in tr.trials if t.outcome.startswith("pruned_") and t.outcome != "pruned_asha")
              / max(len(tr.trials), 1) for tr in traces]
    return f"{sum(shares) / len(shares):.0%}" if shares else "n/a"


def agreement(live: dict[str, float], replayed: dict[str, float], mode: str) -> str:
    """Whether the strategies rank alike live and replayed, by their median returned objective."""
    from scipy.stats import kendalltau

    def ranking(medians: dict[str, float]) -> str:
        ordered = sorted(medians, key=lambda s: -score(medians[s], mode))
        text = f"{ordered[0]} {fmt(medians[ordered[0]])}"
        for before, s in zip(ordered, ordered[1:]):
            text += f" {'=' if score(medians[s], mode) == score(medians[before], mode) else '>'} {s} {fmt(medians[s])}"
        return text

    def top(medians: dict[str, float]) -> set[str]:
        best = max(score(v, mode) for v in medians.values())
        return {s for s, v in medians.items() if score(v, mode) == best and best > -math.inf}

    both = [s for s in live if score(live[s], mode) > -math.inf and score(replayed[s], mode) > -math.inf]
    tau, p = (kendalltau([live[s] for s in both], [replayed[s] for s in both]) if len(both) > 1
              else (math.nan, math.nan))
    same = bool(top(live) & top(replayed))
    agree = same and not math.isnan(tau) and tau >= AGREE_TAU
    tops = f"top strategy live {', '.join(sorted(top(live))) or 'none'}, replay {', '.join(sorted(top(replayed))) or 'none'}"
    return (f"Ranking by median returned objective, live: {ranking(live)}; replay: {ranking(replayed)}. "
            f"Kendall's tau {fmt(float(tau), 2)} (p {fmt(float(p), 2)}, {len(both)} strategies); {tops} "
            f"({'the same' if same else 'not the same'}): the live ranking "
            f"{'agrees' if agree else 'does not agree'} with the replay's.")


def data_set_text(name: str, what: str, run: Any, curves: CurveSet, args: Any, budget: int, slots: int,
                  live: dict[str, list[Trace]], labels: dict[int, dict], walls: dict[str, float]) -> str:
    mode = run.objective.mode
    best = curves.best_final()[1]
    grid_budget = int(round(args.budget_runs * curves.epochs))     # the same runs (epochs, unless --set changes them)
    replayed = {k: [replay(curves, k, seed, grid_budget, 1 if k == "peer-optuna" else slots)
                    for seed in range(args.seeds)] for k in live}
    rows, medians = [], ({}, {})
    for k in live:
        f_live = summarise(live[k], best, mode, [budget], lambda t, i: labels[id(t)][i] in BROKEN,
                           lambda t, i: labels[id(t)][i])
        f_replay = summarise(replayed[k], best, mode, [grid_budget], lambda t, i: curves.broken(i),
                             lambda t, i: curves.label(i))
        medians[0][k] = median_of(f_live["at_budget"][budget], mode)
        medians[1][k] = median_of(f_replay["at_budget"][grid_budget], mode)
        rows.append([TITLES[k], median_value(f_live["at_budget"][budget], mode),
                     median_value(f_replay["at_budget"][grid_budget], mode),
                     f"{f_live['reached']}/{f_live['seeds']}", f"{f_replay['reached']}/{f_replay['seeds']}",
                     fmt(f_live["epochs_per_trial"]), fmt(f_replay["epochs_per_trial"]),
                     health_share(live[k]), health_share(replayed[k]),
                     f"{f_live['broken']}", f"{f_replay['broken']}", f"{walls[k] / args.seeds:.0f}"])
    header = ["strategy", "returned objective, live", "replay", "within 1% of grid best, live", "replay",
              "epochs per trial, live", "replay", "trials health-pruned, live", "replay",
              "broken returned, live", "replay", "live wall s per search"]
    heading = title(name) if name.startswith("real:") else curves.model
    replay_budget = "" if grid_budget == budget else f" (replay: {grid_budget}, {curves.epochs} epochs a run)"
    return (f"### {heading}\n\n{what}: budget {budget} epochs ({args.budget_runs:g} runs of {run.max_epochs})"
            f"{replay_budget} per search, seeds 0-{args.seeds - 1}, {slots} trials at a time (Optuna alone: 1); objective "
            f"{run.objective.metric} ({mode}) median [IQR] over seeds; the grid's best is {fmt(best)}.\n\n"
            + table(header, rows) + "\n\n" + agreement(*medians, mode))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATASETS), help="triplet and/or real:MODEL:DATASET")
    parser.add_argument("--strategies", nargs="+", default=list(ORDER), choices=ORDER)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-runs", type=float, default=24, dest="budget_runs")
    parser.add_argument("--curves", default=str(DATA / "curves_triplet.json.gz"),
                        help="recorded curves of the triplet search (for the grid's best and the replay)")
    parser.add_argument("--set", action="append", default=[], metavar="[DATA@]KEY=VALUE",
                        help="override a setting of every data set's search, or of DATA's (the smoke test "
                             "shrinks the data)")
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    from hpsearch.core.config import build_config
    from hpsearch.driver import runner

    stamp = Stamp(command_line("benchmarks.live", argv))
    harness.cwd_root()
    found = {name: data_set(name, args.curves, overrides(name, args.set)) for name in args.data}
    runs = {name: build_config(raw) for name, (raw, _, _) in found.items()}   # every config checked first
    parts = []
    with tempfile.TemporaryDirectory(prefix="hpsearch-live-") as tmp:
        work = Path(tmp)
        harness.start_ray()
        for name, (raw, curves, what) in found.items():
            run = runs[name]
            budget = int(round(args.budget_runs * run.max_epochs))
            config = harness.write_config(work / f"live-{re.sub(r'[^A-Za-z0-9]+', '-', name)}.yaml", raw)
            live: dict[str, list[Trace]] = {k: [] for k in args.strategies}
            labels: dict[int, dict] = {}
            walls = dict.fromkeys(args.strategies, 0.0)
            for seed in range(args.seeds):
                for k in args.strategies:
                    if k == "peer-optuna":
                        trace, rows, wall = optuna_live(run, seed, budget)
                    else:
                        trace, rows, wall = ray_search(k, config, work, seed, budget)
                    labels[id(trace)] = {t.index: label_rows(rows[t.trial_id], run.objective.metric,
                                                             curves.collapse, run.objective.mode) for t in trace.trials}
                    live[k].append(trace)
                    walls[k] += wall
                    log(f"live {name} {k} seed {seed}: {len(trace.trials)} trials, {trace.spent} epochs, {wall:.0f} s")
            parts.append(data_set_text(name, what, run, curves, args, budget, runner.trial_slots(run), live,
                                       labels, walls))
    body = (f"Every `algorithm` through the product's searcher and scheduler (`auto` is `{AUTO_ALGORITHM}`, "
            "hpsearch.core.config.AUTO_ALGORITHM, so its row is that one's) and the peers, on real training "
            "through one local Ray, as `hpsearch run` assembles a search (Optuna alone: in one process, one "
            "trial at a time); then the replay of the same strategies, seeds and budget (in full-length runs), "
            "as many trials at a time, on the data set's recorded grid (benchmarks.algorithms.replay). The rankings "
            f"agree when Kendall's tau over the strategies' median returned objective is at least {AGREE_TAU:g} "
            "and the top strategy is the same (ties at the top count as the same when they share a strategy).\n\n"
            + "\n\n".join(parts))
    write_section("live", "Live search efficiency (real training) against the replay", body, stamp, out_path(args.out))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
