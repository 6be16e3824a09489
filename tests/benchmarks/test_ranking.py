"""benchmarks.ranking at tiny sizes: every ranking picks from the same search, and the replay's
export rule ranks as the product's report does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from benchmarks import ranking
from benchmarks.traces import TrialRecord, export_rule
from hpsearch.cli import main
from hpsearch.results.report import load_report
from tests.fixtures.rundir_factory import FakeTrial, make_run

TRIALS = [   # hand-written finished trials: a lucky epoch, a steady one, a health-pruned one
    TrialRecord("a", index=0, epochs=4, outcome="completed", values=[0.5, 0.95, 0.6, 0.6]),
    TrialRecord("b", index=1, epochs=4, outcome="completed", values=[0.7, 0.8, 0.8, 0.8]),
    TrialRecord("c", index=2, epochs=4, outcome="pruned_exploding", values=[0.99, 0.99, 0.99, 0.99]),
]


@pytest.mark.parametrize("rank, window, picked", [
    ("best", 5, (0, 2, 0.95)), ("last", 1, (1, 4, 0.8)), ("mean", 2, (1, 4, 0.8)), ("mean", 5, (1, 4, 0.775)),
])
def test_the_replay_returns_what_objective_rank_puts_first(rank, window, picked):
    index, epoch, value = export_rule(1, 4, rank, window)(TRIALS, "max")
    assert (index, epoch) == picked[:2] and value == pytest.approx(picked[2])


@pytest.mark.parametrize("margin, warm, picked", [
    (0.0, {1}, (0, 2, 0.95)),     # the ranking alone
    (1.0, {1}, (1, 2, 0.8)),      # a is no better than the warm start b over their last epochs
    (1.0, set(), (0, 2, 0.95)),   # no warm start among them
    (1.0, {2}, (0, 2, 0.95)),     # a health-pruned warm start is never returned
])
def test_the_replay_returns_the_warm_start_as_the_product_does(margin, warm, picked):
    assert export_rule(1, 4, "best", 5, margin, frozenset(warm))(TRIALS, "max") == picked


WAVY = [0.80, 0.82, 0.80, 0.82, 0.80, 0.82]
PARITY = [(f"h0000001_0000{i}", lr, values) for i, (lr, values) in enumerate([
    (1e-3, [v + 0.008 for v in WAVY]), (2e-3, WAVY), (5e-3, [v - 0.1 for v in WAVY])])]
# noise 0.02 x sqrt(0.6): the first leads the warm start (lr 2e-3) by 0.008 over their last 5
# epochs, inside 1 standard error (0.0098), beyond 0.5


@pytest.mark.parametrize("margin", [0.0, 0.5, 1.0])
def test_the_replay_returns_what_the_report_and_the_export_return(tmp_path, capsys, margin):
    trials = [FakeTrial(tid, {"lr": lr}, [{"train_loss": 1.0, "val_recall_at_1": v} for v in values], "completed",
                        seed=i, checkpoints={e: {"model": {"w": torch.zeros(1)}, "epoch": e} for e in range(1, 7)})
              for i, (tid, lr, values) in enumerate(PARITY)]
    run_dir = make_run(tmp_path, trials, max_epochs=6, rank={"warm_start_margin": margin}, warm_start=[{"lr": 2e-3}])
    reported = load_report(run_dir)["trial_id"].iloc[0]
    assert main(["export", str(run_dir), "--top", "1"]) == 0
    capsys.readouterr()
    exported = next((run_dir / "best").iterdir()).name.split("_", 1)[1]
    records = [TrialRecord(tid, index=i, epochs=6, outcome="completed", values=values)
               for i, (tid, _, values) in enumerate(PARITY)]
    index, _, _ = export_rule(1, 6, "best", 5, margin, frozenset({1}))(records, "max")
    assert reported == exported == PARITY[index][0]
    assert reported == ("h0000001_00000" if margin < 1 else "h0000001_00001")


def test_with_a_checkpoint_every_2_epochs_the_replay_returns_the_latest_one_kept():
    stopped = [TrialRecord("d", index=3, epochs=3, outcome="pruned_asha", values=[0.2, 0.4, 0.9])]
    assert export_rule(2, 4, "mean", 2)(stopped, "max") == (3, 2, pytest.approx(0.3))
    assert export_rule(2, 4, "last")(stopped, "max") == (3, 2, 0.4)
    assert export_rule(1, 4, "last")(stopped, "max") == (3, 3, 0.9)


def test_ranking_writes_a_table_per_grid_noise_and_concurrency_with_every_ranking(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    assert ranking.main(["--smoke", "--out", str(out)]) == 0
    body = out.read_text(encoding="utf-8")
    header = next(line for line in body.splitlines() if line.startswith("| grid | noise |"))
    assert [c.strip() for c in header.strip("|").split("|")][3:] == [label for label, *_ in ranking.RANKINGS]
    rows = [line for line in body.splitlines() if line.startswith("| symmetric | ") and line.count("·")]
    assert [r.split("|")[2].strip() for r in rows] == ["as recorded", "added"]
    for row in rows:     # "not worse · within 1%" of the 2 smoke seeds, per ranking: every returned
        # config beats the symmetric grid's warm-start point (0.016)
        assert all(re.fullmatch(r"2 · [012]", c.strip()) for c in row.strip("|").split("|")[3:]), row
