"""Live search efficiency: the replay's comparison on real training, to check the replay's figures.

    .venv/bin/python -m benchmarks.live                 # writes its section of BENCHMARKS.md

The quickstart search (configs/quickstart.yaml without its warm-start points), a few seeds, one
epoch budget. The Ray strategies run on one local Ray through ``hpsearch.driver.runner.make_tuner`` (the
assembly ``hpsearch run`` uses: the real trainable, actor reuse, checkpoints), each with its own
searcher and scheduler; a search asks for no new trial once the budget is spent (running trials
finish; epochs past the budget are not counted). Optuna alone trains in this process, one trial at
a time. Then the replay (benchmarks.simulate over benchmarks/data/curves_triplet.json.gz) runs the
same strategies, seeds and budget, and both are shown side by side.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.common import DATA, Stamp, command_line, fmt, log, out_path, table, write_section
from benchmarks.curves import BROKEN, CurveSet, label_rows
from benchmarks.figures import median_value, summarise
from benchmarks.simulate import STRATEGIES, Trace, TrialRecord, export_rule, ray_rule, suggest_params
from hpsearch.core.objective import direction, is_better

ORDER = ("hpsearch", "random", "asha", "optuna")
TITLES = {"hpsearch": "hpsearch", "random": "random search, no pruning",
          "asha": "ASHA + OptunaSearch, no health rules", "optuna": "Optuna alone (TPE + HyperbandPruner)"}


def searcher_and_scheduler(strategy: str, plan: Any, outcomes: Any, seed: int, slots: int) -> tuple[Any, Any]:
    """The searcher (at most ``slots`` trials at once, as ``hpsearch run`` limits its own) and the
    scheduler of a strategy."""
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
    if strategy == "hpsearch":
        return make_searcher(run, plan.run_dir, outcomes, max_concurrent=slots), make_scheduler(run, outcomes)
    if strategy == "random":
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

    plan = harness.plan_for(config, work / "runs", f"live-{strategy}-{seed}",
                            [f"seed={seed}", "budget.num_samples=100000"])
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
    rule = export_rule(plan.config.checkpoint.interval, plan.config.max_epochs) if strategy == "hpsearch" else ray_rule
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
    trace, rows = Trace(TITLES["optuna"], seed, budget), {}
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-runs", type=float, default=24, dest="budget_runs")
    parser.add_argument("--curves", default=str(DATA / "curves_triplet.json.gz"),
                        help="recorded curves of the same search (for the grid's best and the replay)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a quickstart setting (the smoke test shrinks the data)")
    parser.add_argument("--out", help="markdown file for the section (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    from hpsearch.core.config import apply_overrides, build_config

    stamp = Stamp(command_line("benchmarks.live", argv))
    harness.cwd_root()
    curves = CurveSet.load(args.curves)
    raw = apply_overrides(harness.quickstart(warm_start=[]), args.set)
    run = build_config(raw)
    E = run.max_epochs
    budget = int(round(args.budget_runs * E))
    live: dict[str, list[Trace]] = {k: [] for k in ORDER}
    labels: dict[int, dict] = {}
    walls: dict[str, float] = {k: 0.0 for k in ORDER}
    with tempfile.TemporaryDirectory(prefix="hpsearch-live-") as tmp:
        work = Path(tmp)
        config = harness.write_config(work / "quickstart.yaml", raw)
        harness.start_ray()
        for seed in range(args.seeds):
            for strategy in ORDER:
                if strategy == "optuna":
                    trace, rows, wall = optuna_live(run, seed, budget)
                else:
                    trace, rows, wall = ray_search(strategy, config, work, seed, budget)
                labels[id(trace)] = {t.index: label_rows(rows[t.trial_id], run.objective.metric,
                                                         curves.collapse, run.objective.mode) for t in trace.trials}
                live[strategy].append(trace)
                walls[strategy] += wall
                log(f"live {strategy} seed {seed}: {len(trace.trials)} trials, {trace.spent} epochs, {wall:.0f} s")
    replay = {k: [STRATEGIES[k](curves, seed, budget) for seed in range(args.seeds)] for k in ORDER}
    mode = run.objective.mode
    best = curves.best_final()[1]
    rows = []
    for k in ORDER:
        def live_broken(trace: Trace, index: int) -> bool:
            return labels[id(trace)][index] in BROKEN

        def live_label(trace: Trace, index: int) -> str:
            return labels[id(trace)][index]

        f_live = summarise(live[k], best, mode, [budget], live_broken, live_label)
        f_replay = summarise(replay[k], best, mode, [budget], lambda t, i: curves.broken(i), lambda t, i: curves.label(i))
        health = [sum(1 for t in tr.trials if t.outcome.startswith("pruned_") and t.outcome != "pruned_asha")
                  / max(len(tr.trials), 1) for tr in live[k]]
        health_replay = [sum(1 for t in tr.trials if t.outcome.startswith("pruned_") and t.outcome != "pruned_asha")
                         / max(len(tr.trials), 1) for tr in replay[k]]
        rows.append([TITLES[k],
                     median_value(f_live["at_budget"][budget], mode), median_value(f_replay["at_budget"][budget], mode),
                     f"{f_live['reached']}/{f_live['seeds']}", f"{f_replay['reached']}/{f_replay['seeds']}",
                     fmt(f_live["epochs_per_trial"]), fmt(f_replay["epochs_per_trial"]),
                     f"{sum(health) / len(health):.0%}", f"{sum(health_replay) / len(health_replay):.0%}",
                     f"{f_live['broken']}", f"{f_replay['broken']}", f"{walls[k] / args.seeds:.0f}"])
    header = ["strategy", "returned objective, live", "replay", "within 1% of grid best, live", "replay",
              "epochs per trial, live", "replay", "trials health-pruned, live", "replay",
              "broken returned, live", "replay", "live wall s per search"]
    body = (f"configs/quickstart.yaml without warm-start points{' with ' + ', '.join(args.set) if args.set else ''}: "
            f"budget {budget} epochs ({args.budget_runs:g} runs of {E}) per search, seeds 0-{args.seeds - 1}; "
            f"objective {run.objective.metric} ({mode}) median [IQR] over seeds; the grid's best is {fmt(best)}.\n\n"
            + table(header, rows))
    write_section("live", "Live search efficiency (real training) against the replay", body, stamp, out_path(args.out))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
