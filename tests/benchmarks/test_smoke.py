"""Every benchmark end to end at tiny sizes, so the scripts keep working as the code moves on.

Each run writes its section into a temporary markdown file (never BENCHMARKS.md). The figures at
these sizes mean nothing; what is checked is that each script runs, writes its section with its
tables, and that the shortcuts the full runs rely on hold: the in-process replay makes the decisions
a real Tuner makes, and an Optuna study in memory gives the searcher the same trials as the
journal file a search keeps.
The tests that start Ray share one local session and are marked slow.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import optuna
import pytest
import torch

from benchmarks import algorithms, detection, portfolio, record_curves, replay, simulate, throughput
from benchmarks.curves import CurveSet, default_paths
from benchmarks.figures import random_expectation
from hpsearch.tune import samplers
from hpsearch.tune.draws import SobolDraws


@pytest.fixture(scope="module")
def tiny_curves(tmp_path_factory: pytest.TempPathFactory) -> str:
    """12 points of the quickstart grid, 3 epochs each, on 20 samples per class."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("curves") / "curves_triplet.json.gz"
    record_curves.main(["triplet", "--workers", "1", "--limit", "12", "--epochs", "3", "--out", str(out),
                        "--set", "samples_per_class=20", "--set", "scheduler.grace_period=1"])
    return str(out)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from benchmarks import harness

    harness.cwd_root()
    harness.start_ray()
    yield
    ray.shutdown()


def section(path: Path, name: str) -> str:
    text = path.read_text(encoding="utf-8")
    found = re.search(rf"<!-- bench:{name} -->(.*?)<!-- /bench:{name} -->", text, re.DOTALL)
    assert found, f"no {name} section in {path}"
    body = found.group(1)
    assert "- machine: " in body and "- versions: " in body and "-m benchmarks." in body
    return body


def test_recorded_grid_replays_each_point_as_itself(tiny_curves: str) -> None:
    curves = CurveSet.load(tiny_curves)
    assert (len(curves), curves.epochs) == (12, 3)
    assert {"train_loss", "train_batch_loss_std", curves.metric} <= set(curves.keys)
    assert [curves.lookup(c) for c in curves.configs] == list(range(12))
    assert all(len(curves.rows(i)) == 3 for i in range(12))


@pytest.mark.parametrize("path", default_paths(), ids=lambda p: p.name)
def test_shipped_curves_are_what_the_model_trains_today(path: Path) -> None:
    """The replay is only as true as its recording: one grid point (the quickest to train), retrained
    now, gives the recorded epochs (if not: `make bench-curves`).

    Within what another CPU allows, not bit for bit: the curves are stored at 5 significant digits,
    and float32 sums in another order (another CPU's kernels, another thread count) drift by a few
    units in the last place per step, compounding over epochs. 1% on the loss and 0.02 on the
    objective is far above that drift and far below what a change to the model or its data does."""
    torch.set_num_threads(1)
    curves = CurveSet.load(path)
    index = min(range(len(curves)), key=lambda i: sum(curves.epoch_s[i]))
    _, rows, _, _ = record_curves.record_one((index, curves.model, {**curves.run.params, **curves.configs[index]},
                                              curves.epochs))
    for fresh, recorded in zip(rows, curves.rows(index)):
        assert fresh["train_loss"] == pytest.approx(recorded["train_loss"], rel=1e-2), ("train_loss", fresh["epoch"])
        assert fresh[curves.metric] == pytest.approx(recorded[curves.metric], abs=0.02), (curves.metric, fresh["epoch"])


def test_replay_writes_every_strategy_and_the_targets(tiny_curves: str, tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    replay.main(["--curves", tiny_curves, "--seeds", "2", "--budget-runs", "4", "--sweep-seeds", "1",
                 "--shipped-seeds", "1", "--workers", "1", "--out", str(out)])
    body = section(out, "replay")
    for title in ("hpsearch", "random search, no pruning", "ASHA + OptunaSearch, no health rules",
                  "Optuna alone (TPE + HyperbandPruner)", "exact expectation", "broken config returned as best by hpsearch",
                  "grace 1, reduction factor 2"):
        assert title in body
    assert "1 of 1 made exactly the same decisions" in body


def test_study_in_memory_gives_the_same_search_as_the_journal(tiny_curves: str) -> None:
    curves = CurveSet.load(tiny_curves)
    a = simulate.hpsearch(curves, seed=3, budget=24, storage="memory")
    b = simulate.hpsearch(curves, seed=3, budget=24, storage="journal")
    assert replay.same_decisions(a, b)
    assert a.spent == 24 and len(a.trials) > 2


def test_random_expectation_counts_epochs_of_trials_in_lockstep() -> None:
    assert random_expectation(1.0, 8, slots=1) == [8, 8, 8]
    assert random_expectation(1.0, 8, slots=2) == [15, 15, 15]  # the first trial's last epoch
    assert random_expectation(0.5, 8, slots=1) == [8, 8, 16]
    assert random_expectation(0.0, 8) == [float("inf")] * 3


def test_detection_planted_curves_meet_their_targets(tiny_curves: str, tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    detection.main(["--curves", tiny_curves, "--out", str(out)])
    body = section(out, "detection")
    _, results = detection.planted_table()
    missed = [r["case"].name for r in results if not r["met"]]
    assert not missed, missed
    assert f"{len(results)} of {len(results)}" in body and "False prunes" in body


def test_throughput_writes_samples_per_second(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    throughput.main(["--smoke", "--out", str(out)])
    body = section(out, "throughput")
    assert re.search(r"\| triplet \| .* \| 1 \| [\d,]+ \|", body)


@pytest.mark.slow
def test_replay_makes_the_decisions_a_real_tuner_makes(tiny_curves: str, ray_session: None) -> None:
    from benchmarks import replay_tune

    tuned, simulated = replay_tune.compare(tiny_curves, seed=1, trials=6)
    assert len(tuned) == 6
    assert tuned == simulated


@pytest.mark.slow
def test_overhead_writes_every_part(tmp_path: Path, ray_session: None) -> None:
    from benchmarks import overhead

    out = tmp_path / "B.md"
    overhead.main(["--smoke", "--out", str(out)])
    for part, needle in (("memory", "peak PSS MiB"), ("epoch", "trainable epoch ms"), ("wall", "wall / ideal"),
                         ("bookkeeping", "Optuna alone"), ("fixed", "x cold"), ("scaling", "driver USS MiB")):
        body = section(out, f"overhead-{part}")
        assert needle in body and "| target | measured | target |" in body
    assert "Trial workers during" in section(out, "overhead-profile")


@pytest.mark.slow
def test_live_writes_live_and_replay_side_by_side(tmp_path: Path, ray_session: None) -> None:
    from benchmarks import live

    out = tmp_path / "B.md"
    ran = [live.AUTO_ALGORITHM, "peer-random", "peer-asha", "peer-optuna"]  # every way a live search runs
    live.main(["--seeds", "1", "--budget-runs", "2", "--strategies", *ran, "--out", str(out), "--set", "epochs=2",
               "--set", "budget.max_epochs=2", "--set", "scheduler.grace_period=1",
               "--set", "triplet@samples_per_class=20", "--set", "real:mlp:digits@val_fraction=0.9"])
    body = section(out, "live")
    parts = body.split("### ")[1:]
    assert [p.splitlines()[0] for p in parts] == ["triplet", "mlp on digits (real data)"]
    for part in parts:
        assert [line.split(" | ")[0] for line in part.splitlines() if line.startswith("| ")][1:] == \
            [f"| {live.TITLES[k]}" for k in ran]
        assert re.search(r"Kendall's tau \S+ \(p \S+, \d strategies\)", part)
        assert re.search(r"the live ranking (agrees|does not agree) with the replay's\.$", part, re.MULTILINE)


def test_a_grid_whose_best_is_rare_gets_the_budget_random_search_needs_to_find_it(tiny_curves: str) -> None:
    curves = CurveSet.load(tiny_curves)
    best = replay.target_value(curves.best_final()[1], curves.mode)
    sign = 1 if curves.mode == "max" else -1
    share = curves.mass([i for i in range(len(curves)) if sign * curves.final(i) >= sign * best])
    assert 0 < share < 1
    assert replay.search_runs(curves, floor=1) == math.ceil(1 / share)   # on average random finds it once
    assert replay.search_runs(curves, floor=1000) == 1000


def test_each_baseline_replays_the_same_search_for_the_same_seed(tiny_curves: str) -> None:
    """A figure that moves from run to run of the same seeds compares nothing (an unnamed Optuna
    study once put trials in HyperbandPruner brackets at random)."""
    curves = CurveSet.load(tiny_curves)
    for name, strategy in simulate.STRATEGIES.items():
        first, again = strategy(curves, 5, 24), strategy(curves, 5, 24)
        assert replay.same_decisions(first, again), name


def test_algorithms_writes_every_choice_and_peer_per_grid_and_the_goals(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    assert algorithms.main(["--smoke", "--out", str(out)]) == 0
    body = section(out, "algorithms")
    for grid in ("### triplet", "### symmetric", "### mlp on digits (real data)"):
        assert grid in body
    assert body.count("2 trials at a time:") == 3 and body.count("8 trials at a time:") == 3
    for name in ("random", "tpe", "rung-tpe", "auto (= ", "random search, no pruning (peer)",
                 "ASHA + OptunaSearch, no health rules (peer)", "Optuna alone (TPE + HyperbandPruner) (peer)",
                 "random search, exact expectation"):
        assert f"| {name}" in body, name
    assert "### Goals for `auto`" in body
    goals = re.findall(r"^\| [^|]+ \| [28] \| (.+?) \|.*\| (met|missed[^|]*|not measured) \|$", body, re.MULTILINE)
    assert len(goals) == 3 * 2 * 6, goals
    assert "Stopping a converged search" in body and "| off |" in body


def test_optuna_alone_with_one_worker_is_study_optimize(tiny_curves: str) -> None:
    """The ask-and-tell replay of Optuna's workers (the peer at 2 and 8 trials at a time) makes, with
    one worker, the decisions study.optimize makes."""
    curves = CurveSet.load(tiny_curves)
    for seed in (0, 1):
        assert replay.same_decisions(simulate.optuna_alone(curves, seed, 24),
                                     simulate.optuna_workers(curves, seed, 24, 1))
    eight = simulate.optuna_alone(curves, 0, 24, concurrency=8)
    assert eight.spent == 24 and len(eight.trials) >= 8


def test_portfolio_replays_each_part_of_rung_tpe_with_its_own_shares(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    assert portfolio.main(["--smoke", "--out", str(out)]) == 0
    body = section(out, "portfolio")
    for setting in portfolio.SETTINGS:
        assert f"| {setting} |" in body, setting
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for random_share, reach_share, draws in portfolio.SETTINGS.values():
        sampler = portfolio._sampler_with((random_share, reach_share, draws))("rung-tpe", space, 0)
        views = {sampler.view(n) for n in range(300)}
        assert (samplers.REACH in views) == (reach_share > 0) and (samplers.BUDGET in views) == (reach_share < 1)
        kind = portfolio.IndependentDraws if draws == portfolio.INDEPENDENT else SobolDraws
        assert all(isinstance(d, kind) for d in sampler._draws)         # the random configs as the row says
