"""benchmarks.ranking at tiny sizes: every ranking picks from the same search, and the replay's
export rule ranks as the product's report does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import ranking, simulate

TRIALS = [   # hand-written finished trials: a lucky epoch, a steady one, a health-pruned one
    simulate.TrialRecord("a", index=0, epochs=4, outcome="completed", values=[0.5, 0.95, 0.6, 0.6]),
    simulate.TrialRecord("b", index=1, epochs=4, outcome="completed", values=[0.7, 0.8, 0.8, 0.8]),
    simulate.TrialRecord("c", index=2, epochs=4, outcome="pruned_exploding", values=[0.99, 0.99, 0.99, 0.99]),
]


@pytest.mark.parametrize("rank, window, picked", [
    ("best", 5, (0, 2, 0.95)), ("last", 1, (1, 4, 0.8)), ("mean", 2, (1, 4, 0.8)), ("mean", 5, (1, 4, 0.775)),
])
def test_the_replay_returns_what_objective_rank_puts_first(rank, window, picked):
    index, epoch, value = simulate.export_rule(1, 4, rank, window)(TRIALS, "max")
    assert (index, epoch) == picked[:2] and value == pytest.approx(picked[2])


def test_with_a_checkpoint_every_2_epochs_the_replay_returns_the_latest_one_kept():
    stopped = [simulate.TrialRecord("d", index=3, epochs=3, outcome="pruned_asha", values=[0.2, 0.4, 0.9])]
    assert simulate.export_rule(2, 4, "mean", 2)(stopped, "max") == (3, 2, pytest.approx(0.3))
    assert simulate.export_rule(2, 4, "last")(stopped, "max") == (3, 2, 0.4)
    assert simulate.export_rule(1, 4, "last")(stopped, "max") == (3, 3, 0.9)


def test_ranking_writes_a_table_per_grid_noise_and_concurrency_with_every_ranking(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    assert ranking.main(["--smoke", "--out", str(out)]) == 0
    body = out.read_text(encoding="utf-8")
    header = next(line for line in body.splitlines() if line.startswith("| grid | noise |"))
    assert [c.strip() for c in header.strip("|").split("|")][3:] == [label for label, _, _ in ranking.RANKINGS]
    rows = [line for line in body.splitlines() if line.startswith("| symmetric | ") and line.count("·")]
    assert [r.split("|")[2].strip() for r in rows] == ["as recorded", "added"]
    for row in rows:     # "not worse · within 1%" of the 2 smoke seeds, per ranking: every returned
        # config beats the symmetric grid's warm-start point (0.016)
        assert all(re.fullmatch(r"2 · [012]", c.strip()) for c in row.strip("|").split("|")[3:]), row
