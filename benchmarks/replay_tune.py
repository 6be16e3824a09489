"""Check the in-process replay against Ray Tune: the same search, both ways, the same decisions.

    .venv/bin/python -m benchmarks.replay_tune --trials 24

A replay trainable (each epoch reports the recorded row of the grid point nearest to its config,
with the verdict the real trainable would compute) runs in a real ``Tuner`` with the real
``make_searcher`` and ``make_scheduler``, one trial at a time (``budget.max_concurrent`` 1, so the
order is deterministic). ``benchmarks.simulate.hpsearch`` replays the same search with
concurrency 1. Every trial must replay the same grid point for the same number of epochs and end
with the same outcome.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.common import DATA, log
from benchmarks.curves import CurveSet

_CACHE: dict[str, CurveSet] = {}


def replay_trainable(config: dict[str, Any], path: str) -> None:
    """Ray Tune function trainable: the recorded epochs of the nearest grid point, with the verdict
    hpsearch.tune.trainable computes after each epoch."""
    from ray import tune

    from hpsearch.core.health import assess

    if path not in _CACHE:
        _CACHE[path] = CurveSet.load(path)
    curves = _CACHE[path]
    history: list[dict[str, Any]] = []
    for row in curves.rows(curves.lookup(config)):
        history.append(row)
        verdict = assess(history, curves.health, curves.collapse, objective=curves.metric)
        tune.report({**row, "health": verdict.status, "health_reason": verdict.reason})


def through_tune(path: str, seed: int, trials: int, work: Path) -> list[tuple[int, int, str]]:
    """(grid index, epochs, outcome) of each trial of a real Tuner run, in creation order."""
    from ray import tune

    from hpsearch.core.rundir import OutcomeLog
    from hpsearch.tune.progress import OutcomeRecorder
    from hpsearch.tune.scheduler import make_scheduler
    from hpsearch.tune.searcher import close_open_trials, make_searcher

    curves = CurveSet.load(path)
    run = dataclasses.replace(curves.run, seed=seed, warm_start=(),
                              budget=dataclasses.replace(curves.run.budget, max_concurrent=1, num_samples=trials))
    run_dir = work / f"tune-{seed}"
    outcomes = OutcomeLog(None)
    searcher = make_searcher(run, run_dir, outcomes)
    events = harness.EventLog()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(replay_trainable, path=path), {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(run, outcomes),
                                    num_samples=trials, reuse_actors=True),
        run_config=tune.RunConfig(name=f"replay-{seed}", storage_path=str(work / "ray"), verbose=0,
                                  callbacks=[OutcomeRecorder(outcomes), events]))
    try:
        tuner.fit()
    finally:
        close_open_trials(searcher)
    order: list[str] = []
    epochs: dict[str, int] = {}
    configs: dict[str, dict] = {}
    for kind, trial_id, result in events.events:
        if trial_id not in epochs:
            order.append(trial_id)
            epochs[trial_id] = 0
        if kind == "result":
            epochs[trial_id] += 1
            configs[trial_id] = result["config"]
    out = []
    for trial_id in order:
        entry = outcomes.get(trial_id)
        out.append((curves.lookup(configs[trial_id]), epochs[trial_id], entry["outcome"] if entry else "running"))
    return out


def in_process(path: str, seed: int, trials: int) -> list[tuple[int, int, str]]:
    from benchmarks import simulate

    trace = simulate.hpsearch(CurveSet.load(path), seed, budget=10**9, concurrency=1, max_trials=trials)
    return [(t.index, t.epochs, t.outcome) for t in trace.trials]


def compare(path: str, seed: int, trials: int) -> tuple[list, list]:
    harness.cwd_root()
    harness.start_ray()
    with tempfile.TemporaryDirectory(prefix="hpsearch-replay-tune-") as tmp:
        tuned = through_tune(path, seed, trials, Path(tmp))
    return tuned, in_process(path, seed, trials)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", default=str(DATA / "curves_triplet.json.gz"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args(argv)
    tuned, simulated = compare(args.curves, args.seed, args.trials)
    same = sum(1 for a, b in zip(tuned, simulated) if a == b)
    for k, (a, b) in enumerate(zip(tuned, simulated), 1):
        log(f"trial {k:3d}: tune {a}  in-process {b}{'' if a == b else '   <-- differs'}")
    print(f"{same} of {max(len(tuned), len(simulated))} trials made the same decisions "
          f"(grid point, epochs, outcome) through Ray Tune and in-process")
    return 0 if tuned == simulated else 1


if __name__ == "__main__":
    raise SystemExit(main())
