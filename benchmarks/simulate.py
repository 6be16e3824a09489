"""Searches over recorded curves: the real searcher and scheduler objects, driven in-process.

Ray Tune's per-trial cost (a worker, a report round trip) would make hundreds of searches take
hours, so ``tune_like`` calls the methods Tune's controller calls, in Tune's order
(ray/tune/execution/tune_controller.py, ``_process_trial_result`` and ``stop_trial``):

    searcher.suggest(id) -> config;  scheduler.on_trial_add(None, trial)
    each epoch:  decision = scheduler.on_trial_result(None, trial, result)
                 CONTINUE -> searcher.on_trial_result(id, result)
    STOP or the last epoch:  scheduler.on_trial_complete(None, trial, result)
                             searcher.on_trial_complete(id, result=result)
                             OutcomeRecorder: "completed" unless the scheduler recorded an outcome

A trial's result is the recorded epoch of the grid point nearest to its config
(``CurveSet.lookup``) plus ``training_iteration`` and, for hpsearch, the verdict the trainable
computes (``hpsearch.core.health.assess`` on the history so far). Epochs are the clock: every running
trial advances one epoch per tick, ``concurrency`` trials at a time, and a freed slot is filled at
once. benchmarks/replay_tune.py runs the same replay through a real ``Tuner`` and checks that both
make the same decisions.

``optuna_alone`` is what an Optuna user writes: ``study.optimize`` with TPE and HyperbandPruner,
reporting each recorded epoch and pruning when told.

Every strategy returns a ``Trace`` (benchmarks.traces): after each finished trial, the config it
would hand back now (by its own rule) and the epochs spent so far.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import math
import tempfile
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from unittest import mock

import numpy as np
import optuna

from benchmarks.curves import CurveSet
from benchmarks.traces import Trace, TrialRecord, export_rule, ray_rule, warm_indices
from hpsearch.core.health import assess
from hpsearch.core.objective import direction, score
from hpsearch.core.rundir import OutcomeLog

# -- the Tune-like loop --------------------------------------------------------------------------

def tune_like(curves: CurveSet, name: str, seed: int, budget: int, searcher: Any, scheduler: Any,
              outcomes: OutcomeLog, *, health: bool, rule: Callable, concurrency: int = 2,
              max_trials: int | None = None) -> Trace:
    trace = Trace(name, seed, budget)
    metric, mode = curves.metric, curves.mode
    running: list[tuple[int, int, str]] = []      # heap of (tick of the next report, launch order, id)
    state: dict[str, tuple[TrialRecord, list[dict], Any]] = {}
    tick, launched, exhausted = 0, 0, False

    def launch(now: int) -> bool:
        nonlocal launched
        if max_trials is not None and launched >= max_trials:
            return False
        trial_id = f"{launched + 1:05d}"
        config = searcher.suggest(trial_id)
        if config is None or config == searcher.FINISHED:     # nothing now / the search has ended
            return False
        launched += 1
        record = TrialRecord(trial_id, curves.lookup(config))
        trial = types.SimpleNamespace(trial_id=trial_id, config=config)
        scheduler.on_trial_add(None, trial)
        state[trial_id] = (record, [], trial)
        trace.trials.append(record)
        heapq.heappush(running, (now + 1, launched, trial_id))
        return True

    def finish(trial_id: str, result: dict) -> None:
        record, _, trial = state[trial_id]
        scheduler.on_trial_complete(None, trial, result)
        searcher.on_trial_complete(trial_id, result=result)
        entry = outcomes.get(trial_id)
        if entry is None:
            entry = outcomes.record(trial_id, "completed", "", record.epochs)
        record.outcome = entry["outcome"]
        found = rule(trace.trials, mode)
        if found is not None and (not trace.incumbents or trace.incumbents[-1][1:] != found):
            trace.incumbents.append((trace.spent, *found))

    while len(running) < concurrency and launch(tick):
        pass
    while running:
        tick, _, trial_id = heapq.heappop(running)
        record, history, trial = state[trial_id]
        row = curves.rows(record.index)[record.epochs]
        record.epochs += 1
        trace.spent += 1
        result = {**row, "training_iteration": record.epochs, "trial_id": trial_id}
        if health:
            history.append(row)
            verdict = assess(history, curves.health, curves.collapse, objective=metric)
            result.update(health=verdict.status, health_reason=verdict.reason)
        record.values.append(float(result.get(metric, math.nan)))
        decision = scheduler.on_trial_result(None, trial, result)
        if decision != "STOP":
            searcher.on_trial_result(trial_id, result)
        if decision == "STOP" or record.epochs >= curves.epochs:
            finish(trial_id, result)
            if trace.spent >= budget:
                exhausted = True
            while not exhausted and len(running) < concurrency and launch(tick):
                pass
        else:
            heapq.heappush(running, (tick + 1, int(trial_id), trial_id))
        if trace.spent >= budget:
            break
    return trace


# -- the strategies ------------------------------------------------------------------------------

def _ray_space(curves: CurveSet) -> dict[str, Any]:
    return {name: spec.to_optuna() for name, spec in curves.run.space.items()}


@contextlib.contextmanager
def study_in_memory():
    """make_searcher with its Optuna study in memory instead of the run dir's journal file. The
    storage holds the trials and decides nothing, so TPE suggests the same (tests/benchmarks checks
    both give the same trace); the replay then times the searcher and scheduler alone."""
    import optuna

    import hpsearch.tune.searcher as module

    with mock.patch.object(module, "study_storage", lambda run_dir: optuna.storages.InMemoryStorage()):
        yield


def hpsearch(curves: CurveSet, seed: int, budget: int, concurrency: int = 2, grace: int | None = None,
             reduction: float | None = None, name: str = "hpsearch", storage: str = "journal",
             max_trials: int | None = None, algorithm: str = "auto", converge_after: int = 0,
             warm_start: Sequence[Mapping[str, Any]] = (), rungs: Mapping[str, Any] | None = None) -> Trace:
    """The product: make_searcher (HealthOptunaSearch, TPE, study in the journal file, or in memory with
    ``storage="memory"``) + make_scheduler (HealthASHA) + the trainable's health verdicts. No
    warm-start points unless ``warm_start`` names some (the grid's own are a demo's); they are
    asked first, in order, as a search with ``warm_start:`` in its YAML asks them. ``rungs``: other
    ``scheduler:`` settings (min_trials, compare, keep_warm_start) over the grid's own."""
    from hpsearch.tune.scheduler import make_scheduler
    from hpsearch.tune.searcher import make_searcher

    run = curves.run
    sched = dataclasses.replace(run.scheduler, grace_period=grace or run.scheduler.grace_period,
                                reduction_factor=reduction or run.scheduler.reduction_factor, **(rungs or {}))
    run = dataclasses.replace(run, seed=seed, warm_start=tuple(dict(p) for p in warm_start), scheduler=sched, algorithm=algorithm,
                              budget=dataclasses.replace(run.budget, max_concurrent=0, converge_after=converge_after))
    in_memory = study_in_memory() if storage == "memory" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="hpsearch-replay-", dir=_fast_tmp()) as run_dir, in_memory:
        outcomes = OutcomeLog(None)
        searcher = make_searcher(run, run_dir, outcomes)
        scheduler = make_scheduler(run, outcomes)
        rule = export_rule(run.checkpoint.interval, curves.epochs, run.objective.rank, run.objective.window,
                           run.objective.warm_start_margin, warm_indices(curves, run))
        return tune_like(curves, name, seed, budget, searcher, scheduler, outcomes, health=True, rule=rule,
                         concurrency=concurrency, max_trials=max_trials)


def random_search(curves: CurveSet, seed: int, budget: int, concurrency: int = 2) -> Trace:
    """Random search, every trial trained to the end (Ray's OptunaSearch with a RandomSampler and
    the FIFO scheduler); best by Ray's rule."""
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(_ray_space(curves), metric=curves.metric, mode=curves.mode,
                            sampler=optuna.samplers.RandomSampler(seed=seed))
    return tune_like(curves, "random search, no pruning", seed, budget, searcher, FIFOScheduler(),
                     OutcomeLog(None), health=False, rule=ray_rule, concurrency=concurrency)


def plain_asha(curves: CurveSet, seed: int, budget: int, concurrency: int = 2) -> Trace:
    """Stock Ray: AsyncHyperBandScheduler + OptunaSearch (same TPE settings as hpsearch), no health
    rules; best by Ray's rule."""
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.search.optuna import OptunaSearch

    np.random.seed(seed)  # Ray's ASHA draws its bracket from numpy's global generator
    run = curves.run
    searcher = OptunaSearch(_ray_space(curves), metric=curves.metric, mode=curves.mode,
                            sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    scheduler = AsyncHyperBandScheduler(time_attr="training_iteration", metric=curves.metric, mode=curves.mode,
                                        max_t=curves.epochs, grace_period=run.scheduler.grace_period,
                                        reduction_factor=run.scheduler.reduction_factor)
    return tune_like(curves, "ASHA + OptunaSearch, no health rules", seed, budget, searcher, scheduler,
                     OutcomeLog(None), health=False, rule=ray_rule, concurrency=concurrency)


def _optuna_study(curves: CurveSet, seed: int) -> optuna.Study:
    # named: HyperbandPruner puts a trial in a bracket by a hash of the study's name, and an
    # unnamed study gets a random one, which made the same seed prune differently run to run
    return optuna.create_study(direction=direction(curves.mode), study_name=f"optuna-alone-{seed}",
                               sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
                               pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=curves.epochs))


def optuna_alone(curves: CurveSet, seed: int, budget: int, concurrency: int = 1) -> Trace:
    """Optuna without Ray: study.optimize, TPE (same settings) + HyperbandPruner, one trial at a
    time; a NaN objective makes Optuna fail the trial. Best: ``study.best_trial``. With
    ``concurrency`` > 1: ``concurrency`` workers sharing the study (``optuna_workers``)."""
    if concurrency > 1:
        return optuna_workers(curves, seed, budget, concurrency)
    trace = Trace("Optuna alone (TPE + HyperbandPruner)", seed, budget)
    space = curves.run.space
    study = _optuna_study(curves, seed)

    def objective(trial: optuna.Trial) -> float:
        record = TrialRecord(str(trial.number), curves.lookup(suggest_params(trial, space)))
        trace.trials.append(record)
        value = math.nan
        for epoch, row in enumerate(curves.rows(record.index), 1):
            value = float(row.get(curves.metric, math.nan))
            record.epochs = epoch
            record.values.append(value)
            trace.spent += 1
            if epoch < curves.epochs and trace.spent >= budget:
                record.outcome = "stopped"
                study.stop()
                raise optuna.TrialPruned()
            trial.report(value, epoch)
            if trial.should_prune():
                record.outcome = "pruned_asha"
                raise optuna.TrialPruned()
        record.outcome = "completed"
        if score(value, curves.mode) > -math.inf:   # Optuna fails a trial whose value is NaN
            best = study.best_trial if _has_complete(study) else None
            if best is None or score(value, curves.mode) > score(best.value, curves.mode):
                trace.incumbents.append((trace.spent, record.index, epoch, value))
        return value

    def stop(study: optuna.Study, _: Any) -> None:
        if trace.spent >= budget:
            study.stop()

    study.optimize(objective, n_trials=100_000, catch=(), callbacks=[stop])
    return trace


def optuna_workers(curves: CurveSet, seed: int, budget: int, concurrency: int) -> Trace:
    """Optuna alone with ``concurrency`` workers sharing one study (what ``study.optimize(n_jobs=k)``
    or k processes on one storage do), replayed deterministically with ask and tell on the epoch
    clock of ``tune_like``: every running trial reports one epoch per tick, a freed worker asks at
    once. TPE + HyperbandPruner as in ``optuna_alone``; a NaN final value fails the trial; best: the
    best completed trial."""
    trace = Trace("Optuna alone (TPE + HyperbandPruner)", seed, budget)
    space, mode, E = curves.run.space, curves.mode, curves.epochs
    study = _optuna_study(curves, seed)
    running: list[tuple[int, int, int]] = []      # heap of (tick of the next report, launch order, number)
    state: dict[int, tuple[optuna.Trial, TrialRecord]] = {}
    best = -math.inf

    def launch(now: int) -> None:
        trial = study.ask()
        record = TrialRecord(str(trial.number), curves.lookup(suggest_params(trial, space)))
        trace.trials.append(record)
        state[trial.number] = (trial, record)
        heapq.heappush(running, (now + 1, trial.number, trial.number))

    for _ in range(concurrency):
        launch(0)
    while running and trace.spent < budget:
        tick, _, number = heapq.heappop(running)
        trial, record = state[number]
        value = float(curves.rows(record.index)[record.epochs].get(curves.metric, math.nan))
        record.epochs += 1
        record.values.append(value)
        trace.spent += 1
        if record.epochs < E and trace.spent >= budget:
            record.outcome = "stopped"
            break
        trial.report(value, record.epochs)
        if trial.should_prune():
            record.outcome = "pruned_asha"
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif record.epochs >= E:
            record.outcome = "completed"
            if score(value, mode) > -math.inf:
                study.tell(trial, value)
                if score(value, mode) > best:
                    best = score(value, mode)
                    trace.incumbents.append((trace.spent, record.index, record.epochs, value))
            else:                                  # Optuna fails a trial whose value is NaN
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            heapq.heappush(running, (tick + 1, number, number))
            continue
        if trace.spent < budget:
            launch(tick)
    return trace


def suggest_params(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """What an Optuna user writes: one suggest_* call per parameter of the space."""
    out = {}
    for name, spec in space.items():
        if spec.kind == "choice":
            out[name] = trial.suggest_categorical(name, list(spec.choices))
        elif spec.kind == "int":
            out[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        else:
            out[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.kind == "loguniform")
    return out


def _has_complete(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _fast_tmp() -> str | None:
    import os

    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


STRATEGIES: dict[str, Callable[..., Trace]] = {
    "hpsearch": hpsearch,
    "random": random_search,
    "asha": plain_asha,
    "optuna": optuna_alone,
}
