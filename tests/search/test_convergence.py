"""hpsearch.core.convergence on hand-written sequences of ranked trials' best objectives, and a
convergence stop on searches replayed over the recorded curves (benchmarks/simulate.py): fewer
trials and epochs than the same search without it, and the reason in the report."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import simulate
from benchmarks.curves import CurveSet, default_paths
from hpsearch.core.convergence import Convergence
from hpsearch.results.report import build_table, read_run
from hpsearch.results.summary import render, summarize
from tests.fixtures.rundir_factory import FakeTrial, history, make_run

CASES = [
    # (what, rule, values in the order the trials ended, mode, stops)
    ("off", Convergence(0), [0.5] * 20, "max", False),
    ("too few trials yet", Convergence(3), [0.5, 0.5, 0.5], "max", False),
    ("three trials without a gain", Convergence(3), [0.4, 0.5, 0.45, 0.5, 0.3], "max", True),
    ("a gain in the window", Convergence(3), [0.4, 0.5, 0.45, 0.51, 0.3], "max", False),
    ("a gain below min_delta", Convergence(3, 0.05), [0.4, 0.5, 0.45, 0.52, 0.3], "max", True),
    ("a gain above min_delta", Convergence(3, 0.05), [0.4, 0.5, 0.45, 0.53, 0.3], "max", False),
    ("minimising", Convergence(2), [3.0, 1.0, 1.5, 2.0], "min", True),
    ("minimising, improved", Convergence(2), [3.0, 1.0, 1.5, 0.9], "min", False),
    ("NaN is no gain", Convergence(2), [0.4, 0.6, math.nan, math.nan], "max", True),
    ("nothing finite before the window", Convergence(2), [math.nan, math.nan, 0.5], "max", False),
]


@pytest.mark.parametrize("what, rule, values, mode, stops", CASES, ids=[c[0] for c in CASES])
def test_convergence(what, rule, values, mode, stops):
    reason = rule.check(values, mode)
    assert bool(reason) == stops
    if stops:
        assert reason.startswith("the best objective (") and f"last {rule.after} ranked trials" in reason


@pytest.mark.parametrize("path", default_paths(), ids=lambda p: p.name)
def test_a_replayed_search_stops_starting_trials_once_converged(path):
    curves = CurveSet.load(path)
    budget = 32 * curves.epochs
    full = simulate.hpsearch(curves, 0, budget, storage="memory")
    stopped = simulate.hpsearch(curves, 0, budget, storage="memory", converge_after=5)
    assert len(stopped.trials) < len(full.trials) and stopped.spent < full.spent
    assert all(t.outcome != "running" for t in stopped.trials)       # the running trials ended as they would


def test_the_report_says_the_search_stopped_early(tmp_path):
    trials = [FakeTrial(f"t{i}", {"lr": 10 ** -(i + 2)}, history(3, obj=(0.1, 0.5)), outcome="completed")
              for i in range(3)]
    run_dir = make_run(tmp_path, trials, max_epochs=3, epochs=3, num_samples=10)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "stopped_early": "the best objective (0.5) did not "
                                                  "improve by more than 0% over the last 2 ranked trials"}))
    run = read_run(run_dir)
    text = render(summarize(run, build_table(run)), width=200)
    assert "stopped early (budget.converge_after): the best objective (0.5) did not improve" in text
