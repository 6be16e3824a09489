"""The warm-start point stands unless beaten by more than the noise: the arithmetic as tables of
hand-written curves, then the report, the summary, the export and the end-of-run text following it."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from hpsearch.cli import main
from hpsearch.core.config import load_config
from hpsearch.core.objective import epoch_noise
from hpsearch.core.space import parse_space
from hpsearch.core.warm_start import (
    Kept,
    config_points,
    exact_points,
    filled_points,
    is_point,
    keeps_warm_start,
    kept_warm_start,
    margin_as_run,
)
from hpsearch.driver.resume import as_it_ran
from hpsearch.results.report import load_report, read_run
from hpsearch.results.summary import render, summarize
from hpsearch.tune.progress import TrialRow, summary
from tests.fixtures.rundir_factory import FakeTrial, make_run

NAN = math.nan
UP_DOWN = [0.50, 0.52, 0.50, 0.52, 0.50, 0.52]     # steps +d -d +d -d +d, d = 0.02: spread 0.02 * sqrt(0.6)


@pytest.mark.parametrize("case, curves, window, expected", [
    ("a steady trend is no noise", [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], 5, 0.0),
    ("steps of +-0.02", [UP_DOWN], 5, 0.02 * math.sqrt(0.6)),
    ("only the last window + 1 values count", [[9.0, -4.0, *UP_DOWN]], 5, 0.02 * math.sqrt(0.6)),
    ("a shorter window reads fewer values", [[0.50, 0.52, 0.50, 0.52]], 3, 0.02 * math.sqrt(2 / 3)),
    ("two values hold no spread", [[0.5, 0.9]], 5, 0.0),
    ("a non-finite value leaves its curve out", [[0.50, 0.52, NAN, 0.52, 0.50, 0.52]], 5, 0.0),
    ("so does a missing one", [[0.50, 0.52, None, 0.52, 0.50, 0.52]], 5, 0.0),
    ("a curve shorter than window + 1 is left out: a rung stopped it on its steep start",
     [[0.3, 0.6, 0.7], [0.2, 0.5, 0.6], UP_DOWN], 5, 0.02 * math.sqrt(0.6)),
    ("window 1 still reads 3 values", [[0.50, 0.52, 0.50]], 1, 0.02),
    ("every curve shorter than window + 1: the longest sets the span", [[0.50, 0.52, 0.50, 0.52], [0.1, 0.2]], 5,
     0.02 * math.sqrt(2 / 3)),
    ("the median over curves", [[x * 1 for x in UP_DOWN], [0.5 + 2 * (x - 0.5) for x in UP_DOWN],
                                [0.5 + 5 * (x - 0.5) for x in UP_DOWN]], 5, 0.04 * math.sqrt(0.6)),
    ("no curves", [], 5, 0.0),
])
def test_epoch_noise(case, curves, window, expected):
    assert epoch_noise(curves, window) == pytest.approx(expected, abs=1e-12), case


# window 2 and noise 0.01: the first must lead by more than margin x 0.01 x sqrt(2 / 2)
@pytest.mark.parametrize("case, first, warm, mode, noise, margin, kept", [
    ("a lead inside the noise", [0.9, 0.80, 0.80], [0.79, 0.795, 0.795], "max", 0.01, 1.0, True),
    ("a lead beyond it", [0.7, 0.83, 0.83], [0.79, 0.80, 0.80], "max", 0.01, 1.0, False),
    ("margin 0: the ranking alone", [0.9, 0.80, 0.80], [0.79, 0.795, 0.795], "max", 0.01, 0.0, False),
    ("a wider margin keeps more", [0.7, 0.825, 0.825], [0.79, 0.80, 0.80], "max", 0.01, 3.0, True),
    ("the warm start better over the window", [0.95, 0.70, 0.72], [0.8, 0.81, 0.80], "max", 0.01, 1.0, True),
    ("min mode: a lower loss inside the noise", [0.1, 0.20, 0.20], [0.3, 0.205, 0.205], "min", 0.01, 1.0, True),
    ("min mode: a lower loss beyond it", [0.1, 0.17, 0.17], [0.3, 0.205, 0.205], "min", 0.01, 1.0, False),
    ("no noise: a tie keeps the warm start", [0.9, 0.8, 0.8], [0.7, 0.8, 0.8], "max", 0.0, 1.0, True),
    ("no noise: any lead wins", [0.9, 0.8, 0.8001], [0.7, 0.8, 0.8], "max", 0.0, 1.0, False),
    ("a warm start with NaN in its window is not kept", [0.9, 0.8, 0.8], [0.8, NAN, 0.8], "max", 0.01, 1.0, False),
    ("a first with NaN in its window does not beat it", [0.9, NAN, 0.99], [0.7, 0.8, 0.8], "max", 0.01, 1.0, True),
])
def test_keeps_warm_start(case, first, warm, mode, noise, margin, kept):
    assert keeps_warm_start(first, warm, mode, noise, window=2, margin=margin) is kept, case


# window 5 and noise 0.01: the means of 5 epochs each must differ by more than margin x 0.01 x sqrt(2 / 5)
@pytest.mark.parametrize("case, first, warm, kept", [
    ("a lead of 0.0060 is inside 0.0063", [0.806] * 5, [0.8] * 5, True),
    ("a lead of 0.0065 is beyond it", [0.8065] * 5, [0.8] * 5, False),
    # a trial of 2 epochs: sqrt(1/2 + 1/5) = 0.837 standard errors of 0.01
    ("a shorter trial's mean counts its fewer epochs: 0.0080 is inside 0.0084", [0.808] * 2, [0.8] * 5, True),
    ("0.0090 is beyond it", [0.809] * 2, [0.8] * 5, False),
])
def test_keeps_warm_start_over_a_window_of_five(case, first, warm, kept):
    assert keeps_warm_start(first, warm, "max", 0.01, window=5, margin=1.0) is kept, case


def test_keeps_warm_start_refuses_a_negative_margin():
    with pytest.raises(ValueError, match="margin and noise must be >= 0"):
        keeps_warm_start([0.8], [0.8], "max", 0.01, margin=-1.0)


LUCKY = [0.60, 0.95, 0.70, 0.78, 0.79, 0.80, 0.79, 0.80]    # one lucky epoch, then a plateau near 0.79
PLAIN = [0.70, 0.76, 0.78, 0.80, 0.79, 0.81, 0.80, 0.81]    # the warm start: a plateau near 0.80
RISER = [0.70, 0.80, 0.86, 0.90, 0.93, 0.96, 0.97, 0.98]    # clearly better at the end


@pytest.mark.parametrize("case, curves, warm, expected", [
    ("a lucky epoch does not displace the warm start", [LUCKY, PLAIN], [False, True], 1),
    ("the best warm-start trial, not a later one", [LUCKY, RISER[:2] + PLAIN[2:], PLAIN], [False, True, True], 1),
    ("the warm-start trial with the best window, not one with a lucky epoch",
     [LUCKY, [0.5, 0.94, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6], PLAIN], [False, True, True], 2),
    ("a warm-start trial with a NaN in its window is passed over", [LUCKY, PLAIN[:-1] + [NAN], PLAIN],
     [False, True, True], 2),
    ("a clear winner stands", [RISER, PLAIN], [False, True], None),
    ("the first is a warm start itself", [PLAIN, LUCKY], [True, False], None),
    ("no warm start among them", [LUCKY, PLAIN], [False, False], None),
    ("nothing ranked", [], [], None),
])
def test_kept_warm_start(case, curves, warm, expected):
    kept = kept_warm_start(curves, warm, "max", window=5, margin=1.0)
    assert (kept.position if kept is not None else None) == expected, case
    assert kept_warm_start(curves, warm, "max", window=5, margin=0.0) is None


@pytest.mark.parametrize("kept, words", [
    (Kept(1, held=0.80, challenger=0.805, allowed=0.0067, mode="max", window=5),
     "#1 leads by 0.005 (0.805 against 0.8), within the objective's noise (0.0067; objective.warm_start_margin)"),
    (Kept(1, held=0.80, challenger=0.79, allowed=0.0067, mode="max", window=5, shorter=True),
     "#2 is as good or better (0.8 against 0.79)"),
    (Kept(1, held=0.80, challenger=0.79, allowed=0.0067, mode="max", window=5), "#2 is as good or better (0.8 against 0.79)"),
    (Kept(1, held=0.20, challenger=0.21, allowed=0.01, mode="min", window=3), "#2 is as good or better (0.2 against 0.21)"),
    (Kept(1, held=0.80, challenger=NAN, allowed=0.01, mode="max", window=5), "#1 has a non-finite value"),
])
def test_why_the_warm_start_is_returned_in_words(kept, words):
    phrase = kept.phrase("#1", "#2")
    shorter = " (all of a shorter one)" if kept.shorter else ""
    assert phrase == (f"#2, a warm-start point, is returned ahead of #1: over the mean of their last {kept.window} "
                      f"epochs{shorter}, {words}")


def test_kept_warm_start_refuses_flags_that_do_not_match_the_curves():
    with pytest.raises(ValueError, match="2 curves but 1 warm-start flags"):
        kept_warm_start([LUCKY, PLAIN], [True], "max")


@pytest.mark.parametrize("written, configured, expected", [
    ({"metric": "val_acc", "mode": "max", "rank": "best", "window": 5, "warm_start_margin": 2.0}, 2.0, 2.0),
    ({"metric": "val_acc", "mode": "max", "rank": "best", "window": 5}, 1.0, 0.0),    # written before the key
    (None, 1.0, 1.0),                                                                  # the model's default objective
])
def test_a_run_reads_the_margin_it_ran_with(written, configured, expected):
    assert margin_as_run(written, configured) == expected


@pytest.mark.parametrize("objective, margin", [
    ({"metric": "val_recall_at_1", "mode": "max"}, 0.0),                               # written before the key
    ({"metric": "val_recall_at_1", "mode": "max", "warm_start_margin": 2.0}, 2.0),
])
def test_a_resumed_search_keeps_the_margin_it_ran_with(tmp_path, objective, margin):
    """Resume reads search.yaml into the config its end-of-run text uses; the report reads the
    same file with margin_as_run: both say the same trial."""
    raw = {"model": "triplet", "objective": objective}
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(raw))
    config = as_it_ran(load_config(tmp_path / "search.yaml"), raw)
    assert config.objective.warm_start_margin == margin
    assert config.objective.metric == "val_recall_at_1"


def test_a_resumed_search_keeps_the_spike_limit_it_ran_with(tmp_path):
    raw = {"model": "triplet", "health": {"exploding": {"factor": 8, "patience": 2, "rate": 1.0}}}
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(raw))
    config = as_it_ran(load_config(tmp_path / "search.yaml"), raw)
    assert (config.health.exploding.spike, config.health.exploding.factor) == (8.0, 8.0)
    assert config.health.exploding.trained_patience == 2          # written before it: its patience
    assert config.health.exploding.hold == 1                      # written before it: the rule of then
    assert config.health.flatline == load_config(tmp_path / "search.yaml").health.flatline


def test_warm_start_points_become_one_config_each():
    space = parse_space({"lr": {"loguniform": [1e-5, 1e-1]}, "hidden_dim": {"choice": [32, 64]}})
    points = filled_points([{"lr": 1e-3}, {"hidden_dim": 64}, {"lr": 2e-3, "hidden_dim": 32}], space,
                           {"hidden_dim": 64, "lr": 0.5})     # lr 0.5 lies outside the space: left to the sampler
    assert points == [{"lr": 1e-3, "hidden_dim": 64}, {"hidden_dim": 64}, {"lr": 2e-3, "hidden_dim": 32}]
    exact = exact_points(points, space)
    assert exact == [{"lr": 1e-3, "hidden_dim": 64}, {"lr": 2e-3, "hidden_dim": 32}]
    assert config_points([{"lr": 1e-3}, {"hidden_dim": 64}, {"lr": 2e-3, "hidden_dim": 32}], space,
                         {"hidden_dim": 64, "lr": 0.5}) == exact
    assert is_point({"lr": 2e-3, "hidden_dim": 32, "margin": 0.1}, exact)
    assert not is_point({"lr": 2e-3, "hidden_dim": 64}, exact)


def lucky_run(tmp_path, **objective):
    """Three completed trials: a lucky epoch (ranked first by its best epoch), the warm start, and one
    below both; objective.warm_start_margin 1 unless ``objective`` says."""
    objective = {"warm_start_margin": 1.0, **objective}
    curves = {"c0000001_00000": ({"lr": 1e-3}, LUCKY), "c0000001_00001": ({"lr": 2e-3}, PLAIN),
              "c0000001_00002": ({"lr": 5e-3}, [v - 0.1 for v in PLAIN])}
    trials = [FakeTrial(tid, config, [{"train_loss": 1.0, "val_recall_at_1": v} for v in values], "completed",
                        seed=i, checkpoints={e: checkpoint(e) for e in range(1, 9)})
              for i, (tid, (config, values)) in enumerate(curves.items())]
    return make_run(tmp_path, trials, max_epochs=8, rank=objective, warm_start=[{"lr": 2e-3}])


def checkpoint(epoch: int) -> dict:
    """A checkpoint payload in the trainable's format."""
    return {"model": {"w": torch.full((2,), float(epoch))}, "history": [{"epoch": e} for e in range(1, epoch + 1)],
            "seed": 5, "epoch": epoch, "params": {}}


def test_the_report_returns_the_warm_start_a_lucky_epoch_does_not_beat(tmp_path):
    run_dir = lucky_run(tmp_path)
    table = load_report(run_dir)
    assert list(table["trial_id"]) == ["c0000001_00001", "c0000001_00000", "c0000001_00002"]
    assert table["warm_start"].tolist() == [True, False, False]
    why = table.attrs["returned"]
    assert why == ("trial #2, a warm-start point, is returned ahead of trial #1: over the mean of their last 5 "
                   "epochs, trial #2 is as good or better (0.802 against 0.792)")
    best = summarize(read_run(run_dir), table)["best"]
    assert best["trial_id"] == "c0000001_00001" and best["value"] == pytest.approx(max(PLAIN)) and best["why"] == why
    assert why in render(summarize(read_run(run_dir), table), 400)


def test_margin_zero_ranks_as_before(tmp_path):
    table = load_report(lucky_run(tmp_path, warm_start_margin=0))
    assert list(table["trial_id"]) == ["c0000001_00000", "c0000001_00001", "c0000001_00002"]
    assert table.attrs["returned"] == ""


def test_a_run_dir_written_before_the_margin_returns_its_first_ranked_trial(tmp_path):
    run_dir = lucky_run(tmp_path)
    raw = yaml.safe_load((run_dir / "search.yaml").read_text())
    del raw["objective"]["warm_start_margin"]
    (run_dir / "search.yaml").write_text(yaml.safe_dump(raw))
    assert read_run(run_dir).warm_start_margin == 0.0
    assert load_report(run_dir)["trial_id"].iloc[0] == "c0000001_00000"


WAVY = [0.80, 0.82, 0.80, 0.82, 0.80, 0.82]       # the warm start: steps of +-0.02, mean of the last 5 0.812


@pytest.mark.parametrize("margin, first", [(0.5, "e0000001_00000"), (1.0, "e0000001_00001"), (2.0, "e0000001_00001")])
def test_the_noise_of_the_curves_decides(tmp_path, margin, first):
    """Every curve moves by +-0.02 an epoch: noise 0.02 x sqrt(0.6) = 0.0155, so a lead over means of
    5 epochs must exceed margin x 0.0098; the first-ranked trial leads the warm start by 0.008."""
    curves = {"e0000001_00000": ({"lr": 1e-3}, [v + 0.008 for v in WAVY]), "e0000001_00001": ({"lr": 2e-3}, WAVY),
              "e0000001_00002": ({"lr": 5e-3}, [v - 0.1 for v in WAVY])}
    trials = [FakeTrial(tid, config, [{"train_loss": 1.0, "val_recall_at_1": v} for v in values], "completed", seed=i)
              for i, (tid, (config, values)) in enumerate(curves.items())]
    run_dir = make_run(tmp_path, trials, max_epochs=6, rank={"warm_start_margin": margin}, warm_start=[{"lr": 2e-3}])
    table = load_report(run_dir)
    assert table["trial_id"].iloc[0] == first
    if first == "e0000001_00001":
        assert table.attrs["returned"] == (
            "trial #2, a warm-start point, is returned ahead of trial #1: over the mean of their last 5 epochs, "
            f"trial #1 leads by 0.008 (0.82 against 0.812), within the objective's noise "
            f"({0.02 * math.sqrt(0.6) * math.sqrt(2 / 5) * margin:.4g}; objective.warm_start_margin)")


def test_a_health_pruned_warm_start_is_never_returned(tmp_path):
    trials = [FakeTrial("f0000001_00000", {"lr": 1e-3}, [{"train_loss": 1.0, "val_recall_at_1": v} for v in LUCKY],
                        "completed"),
              FakeTrial("f0000001_00001", {"lr": 2e-3}, [{"train_loss": 1.0, "val_recall_at_1": v} for v in RISER],
                        "pruned_flatline", "train_loss unchanged for 3 epochs")]
    table = load_report(make_run(tmp_path, trials, max_epochs=8, rank={"warm_start_margin": 1.0},
                                 warm_start=[{"lr": 2e-3}]))
    assert list(table["trial_id"]) == ["f0000001_00000", "f0000001_00001"] and table.attrs["returned"] == ""


def test_a_loss_objective_keeps_its_warm_start_too(tmp_path):
    losses = {"g0000001_00000": ({"lr": 1e-3}, [1.0, 0.30, 0.52, 0.50, 0.51, 0.50]),     # one lucky low epoch
              "g0000001_00001": ({"lr": 2e-3}, [1.0, 0.60, 0.50, 0.49, 0.50, 0.49])}     # the warm start
    trials = [FakeTrial(tid, config, [{"train_loss": v, "val_loss": v} for v in values], "completed", seed=i)
              for i, (tid, (config, values)) in enumerate(losses.items())]
    run_dir = make_run(tmp_path, trials, max_epochs=6, objective=("val_loss", "min"),
                       rank={"warm_start_margin": 1.0}, warm_start=[{"lr": 2e-3}])
    assert list(load_report(run_dir)["trial_id"]) == ["g0000001_00001", "g0000001_00000"]
    assert list(load_report(make_run(tmp_path, trials, name="plain", max_epochs=6, objective=("val_loss", "min"),
                                     warm_start=[{"lr": 2e-3}]))["trial_id"]) == ["g0000001_00000", "g0000001_00001"]


def test_the_export_writes_the_warm_start_first(tmp_path, capsys):
    run_dir = lucky_run(tmp_path)
    assert main(["export", str(run_dir), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert [f.name for f in sorted((run_dir / "best").iterdir())] == ["1_c0000001_00001", "2_c0000001_00000"]
    raw = yaml.safe_load((run_dir / "best" / "1_c0000001_00001" / "config.yaml").read_text())
    assert raw["params"]["lr"] == 2e-3 and raw["epochs"] == PLAIN.index(max(PLAIN)) + 1
    assert "a warm-start point, is returned ahead of trial #1" in out


def test_a_warm_start_without_a_checkpoint_is_said_and_the_next_exported(tmp_path, capsys):
    trials = [FakeTrial("k0000001_00000", {"lr": 1e-3}, [{"train_loss": 1.0, "val_recall_at_1": v} for v in LUCKY],
                        "completed", checkpoints={e: checkpoint(e) for e in range(1, 9)}),
              FakeTrial("k0000001_00001", {"lr": 2e-3}, [{"train_loss": 1.0, "val_recall_at_1": v} for v in PLAIN],
                        "completed")]
    run_dir = make_run(tmp_path, trials, max_epochs=8, rank={"warm_start_margin": 1.0}, warm_start=[{"lr": 2e-3}])
    assert load_report(run_dir)["trial_id"].iloc[0] == "k0000001_00001"
    assert main(["export", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert [f.name for f in (run_dir / "best").iterdir()] == ["1_k0000001_00000"]
    assert "a warm-start point, is returned ahead of trial #1" in out and "it is not exported" in out


def test_a_bad_margin_is_one_line_before_anything_runs(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": "triplet", "objective": {"metric": "val_recall_at_1", "mode": "max",
                                                                        "warm_start_margin": -1}}))
    assert main(["run", str(config), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "objective.warm_start_margin" in err and "-1" in err
    assert not (tmp_path / "runs").exists()


def test_the_end_of_run_text_names_the_warm_start_it_returns():
    rows = {}
    for i, (config, values) in enumerate([({"lr": 1e-3}, LUCKY), ({"lr": 2e-3}, PLAIN)]):
        row = TrialRow(trial_id=f"t{i}", label=f"#{i + 1}", config=config)
        for epoch, value in enumerate(values, 1):
            row.values.append(value)
            row.epoch = epoch
        rows[row.trial_id] = row
    outcomes = {t: {"outcome": "completed", "reason": ""} for t in rows}
    text = summary(rows, outcomes, "val_recall_at_1", "max", "runs/x", warm_points=[{"lr": 2e-3}], margin=1.0)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("best trials by"))
    assert lines[at + 1].strip().startswith("#2, a warm-start point, is returned ahead of #1")
    assert lines[at + 2].split()[0] == "#2" and lines[at + 3].split()[0] == "#1"
    plain = summary(rows, outcomes, "val_recall_at_1", "max", "runs/x").splitlines()
    assert plain[at + 1].split()[0] == "#1"
