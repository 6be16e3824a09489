"""hpsearch.core.advice: edge-of-range advice, on hand-written rankings and on searches replayed over
the recorded curve grids (benchmarks/data): the symmetric grid's best trials sit at the edges of its
loss-weight ranges, the triplet grid's best lies inside its ranges."""

from __future__ import annotations

import pytest

from benchmarks import simulate
from benchmarks.curves import CurveSet, default_paths
from hpsearch.core.advice import edge_of_range
from hpsearch.core.objective import score
from hpsearch.core.outcomes import RANKED
from hpsearch.core.space import Spec
from hpsearch.results.report import build_table, read_run
from hpsearch.results.summary import render, summarize
from hpsearch.tune.progress import TrialRow, summary
from tests.fixtures.rundir_factory import FakeTrial, history, make_run

LR = Spec("loguniform", 1e-4, 1e-1)
WIDTH = Spec("int", 16, 256, log=True)
WEIGHT = Spec("uniform", 0.0, 1.0)
MINING = Spec("choice", choices=("hard", "semi_hard"))


def trials(**columns):
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


CASES = [
    # (what, space, best-first searched values, expected lines as (parameter, side, suggested range))
    ("lr at its upper bound", {"lr": LR}, trials(lr=[0.09, 0.1, 0.08, 0.001, 0.0003]),
     [("lr", "upper", "[1.000e-04, 1]")]),
    ("width at its lower bound", {"hidden_dim": WIDTH}, trials(hidden_dim=[16, 17, 18, 200, 100]),
     [("hidden_dim", "lower", "[1, 256]")]),
    ("the best inside the range", {"lr": LR}, trials(lr=[0.003, 0.002, 0.09, 0.0001, 0.05]), []),
    ("the best at an edge, but the top split between the two ends", {"lr": LR},
     trials(lr=[0.1, 0.0001, 0.0001, 0.01, 0.01, 0.01]), []),
    ("a weight best at 0 cannot widen below 0", {"w": WEIGHT}, trials(w=[0.0, 0.05, 0.02, 0.5, 0.9]),
     [("w", "lower", None)]),
    ("a weight best at 1 widens above", {"w": WEIGHT}, trials(w=[1.0, 0.95, 0.93, 0.5, 0.1]),
     [("w", "upper", "[0, 2]")]),
    ("a log range of less than a decade widens by its own width", {"lr": Spec("loguniform", 0.5, 2.0)},
     trials(lr=[1.95, 1.9, 2.0, 0.7, 0.6]), [("lr", "upper", "[0.5, 8]")]),
    ("a log range of decades widens by one", {"lr": Spec("loguniform", 0.01, 3.0)},
     trials(lr=[2.9, 2.5, 2.8, 0.1, 0.05]), [("lr", "upper", "[0.01, 30]")]),
    ("choices have no edge", {"mining": MINING}, trials(mining=["hard"] * 5), []),
    ("too few trials say nothing", {"lr": LR}, trials(lr=[0.1, 0.1, 0.1]), []),
    ("two parameters, one at an edge", {"lr": LR, "hidden_dim": WIDTH},
     trials(lr=[0.1, 0.09, 0.1, 0.001, 0.001], hidden_dim=[64, 32, 128, 16, 256]),
     [("lr", "upper", "[1.000e-04, 1]")]),
]


@pytest.mark.parametrize("what, space, ranked, expected", CASES, ids=[c[0] for c in CASES])
def test_edge_of_range(what, space, ranked, expected):
    lines = edge_of_range(space, ranked)
    assert len(lines) == len(expected), lines
    for line, (name, side, suggested) in zip(lines, expected):
        assert line.startswith(f"{name}: the best trials sit at the {side} edge of its range")
        if suggested is None:
            assert "0 is as low as it goes" in line
        else:
            assert line.endswith(f"try {suggested}")


def replayed_ranking(curves: CurveSet, seed: int = 0) -> list[dict]:
    """A 24-run search replayed over the recorded curves with the real searcher and scheduler
    (benchmarks/simulate.py), its rankable trials best first, as the grid points they trained."""
    trace = simulate.hpsearch(curves, seed, budget=24 * curves.epochs, storage="memory")
    done = [t for t in trace.trials if t.outcome in RANKED and t.values]
    done.sort(key=lambda t: -max(score(v, curves.mode) for v in t.values))
    return [curves.configs[t.index] for t in done]


@pytest.mark.parametrize("path, edges, inside", [
    # the triplet searches' best trials: lr 0.3-0.96, inside its log range
    ("curves_triplet.json.gz", set(), {"lr"}),
    # the symmetric searches' best trials: w_parse 2, the top of its range (the parse term carries
    # the objective), lr 0.001-0.01 inside its log range
    ("curves_symmetric.json.gz", {("w_parse", "upper")}, {"lr"}),
])
def test_replayed_searches_name_the_edges_their_best_trials_sit_at(path, edges, inside):
    """Four seeded 24-run searches per grid: where their best trials land depends on the sampler,
    but on these grids every one lands with the same parameters at an edge and inside."""
    (found,) = [p for p in default_paths() if p.name == path]
    curves = CurveSet.load(found)
    for seed in range(4):
        lines = edge_of_range(curves.run.space, replayed_ranking(curves, seed))
        named = {(line.split(":")[0], line.split(" edge")[0].rsplit(" ", 1)[1]) for line in lines}
        assert edges <= named and not {n for n, _ in named} & inside, (seed, lines)


@pytest.mark.parametrize("lrs, widen", [
    ([0.1, 0.09, 0.095, 1e-4, 1e-5, 3e-5], True),      # the best three at the top of [1e-5, 0.1]
    ([1e-3, 2e-3, 5e-4, 1e-4, 1e-5, 0.1], False),       # the best in the middle
])
def test_the_report_says_which_range_to_widen(tmp_path, capsys, lrs, widen):
    trials = [FakeTrial(f"t{i}", {"lr": lr}, history(3, obj=(0.1, 0.9 - 0.1 * i)), outcome="completed")
              for i, lr in enumerate(lrs)]
    run_dir = make_run(tmp_path, trials, max_epochs=3, epochs=3)
    summary = summarize(read_run(run_dir), build_table(read_run(run_dir)))
    assert bool(summary["advice"]) == widen
    assert ("ranges to widen:" in render(summary, width=200)) == widen
    if widen:
        assert summary["advice"][0].startswith("lr: the best trials sit at the upper edge")


@pytest.mark.parametrize("lrs, widen", [([0.1, 0.09, 0.095, 1e-4, 1e-5, 3e-5], True),
                                        ([1e-3, 2e-3, 5e-4, 1e-4, 1e-5, 0.1], False)])
def test_the_end_of_search_summary_says_which_range_to_widen(lrs, widen):
    rows = {f"t{i}": TrialRow(f"t{i}", f"#{i + 1}", status="completed", epoch=3, values=[0.1, 0.9 - 0.1 * i],
                              config={"lr": lr}, seed=i) for i, lr in enumerate(lrs)}
    outcomes = {t: {"outcome": "completed", "reason": ""} for t in rows}
    text = summary(rows, outcomes, "val_acc", "max", "runs/x", space={"lr": Spec("loguniform", 1e-5, 1e-1)})
    assert ("ranges to widen:\n  lr: the best trials sit at the upper edge" in text) == widen
