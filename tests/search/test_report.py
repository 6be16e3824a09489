"""The report: one row per trial with known values, the summary, the diagnoses and bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

import hpsearch
from hpsearch.cli import main
from hpsearch.results.diagnose import diagnose
from hpsearch.results.report import load_report, read_run
from hpsearch.results.summary import format_table, render, summarize
from tests.fixtures.rundir_factory import FakeTrial, history, make_run

TRIPLET_SPACE = {"lr": {"loguniform": [1e-5, 1e-1]}, "margin": {"uniform": [0.05, 1.0]}}


def known_run(root, state="finished"):
    """Four trials, one of each kind the report must tell apart."""
    good = history(4, obj=(0.2, 0.8), loss=(2.0, 0.5), train_active_triplets=12.0)
    good[3]["val_recall_at_1"] = 0.7          # best at epoch 3 (0.6 -> 0.8 is the line; set below)
    good[2]["val_recall_at_1"] = 0.9
    asha = history(2, obj=(0.1, 0.35), loss=(2.0, 1.8), train_active_triplets=9.0)
    boom = history(3, obj=(0.2, 0.4), loss=(2.0, 40.0), train_active_triplets=5.0)
    boom[2]["val_recall_at_1"] = math.nan
    live = history(2, obj=(0.1, 0.5), loss=(2.0, 1.5), train_active_triplets=7.0)
    trials = [
        FakeTrial("b0000001_00000", {"lr": 1e-3, "margin": 0.2}, good, "completed", "reached max_epochs",
                  seed=101, rereported={2: {"train_loss": 123.0, "val_recall_at_1": 0.99}}),
        FakeTrial("b0000001_00001", {"lr": 1e-4, "margin": 0.5}, asha, "pruned_asha",
                  "below the rung-2 cutoff", seed=102),
        FakeTrial("b0000001_00002", {"lr": 5e-2, "margin": 0.3}, boom, "pruned_exploding",
                  "train_loss 40 > 10 x best 2", seed=103, epoch_s=0.25),
        FakeTrial("b0000001_00003", {"lr": 3e-4, "margin": 0.9}, live, None, seed=104),
    ]
    return make_run(root, trials, space=TRIPLET_SPACE, max_epochs=4, num_samples=6, state=state)


def test_every_column_of_a_run_with_known_outcomes(tmp_path):
    table = load_report(known_run(tmp_path))

    assert list(table.columns) == [
        "trial", "trial_id", "outcome", "reason", "epochs", "objective_best", "best_epoch", "objective_last",
        "objective_mean", "warm_start", "config/lr", "config/margin", "seed", "time_s", "started", "ended", "node",
        "train_loss", "train_active_triplets", "train_batch_loss_std", "train_grad_norm", "val_recall_at_1"]
    assert table.attrs["objective"] == "val_recall_at_1" and table.attrs["mode"] == "max"
    # sorted best first: 0.9 (completed), 0.5 (running), 0.35 (asha), 0.3 (exploding, NaN at the end)
    assert list(table["trial_id"]) == ["b0000001_00000", "b0000001_00003", "b0000001_00001", "b0000001_00002"]
    assert list(table["outcome"]) == ["completed", "running", "pruned_asha", "pruned_exploding"]
    assert list(table["reason"]) == ["reached max_epochs", "", "below the rung-2 cutoff", "train_loss 40 > 10 x best 2"]
    assert list(table["epochs"]) == [4, 2, 2, 3]
    assert table["objective_best"].tolist() == pytest.approx([0.9, 0.5, 0.35, 0.3])
    assert list(table["best_epoch"]) == [3, 2, 2, 2]
    last = table["objective_last"].tolist()
    assert last[:3] == pytest.approx([0.7, 0.5, 0.35]) and math.isnan(last[3])
    mean = table["objective_mean"].tolist()          # its last 5 epochs: all of these trials' epochs
    assert mean[:3] == pytest.approx([(0.2 + 0.4 + 0.9 + 0.7) / 4, 0.3, 0.225]) and math.isnan(mean[3])
    assert table.attrs["rank"] == "objective_best"
    assert table["config/lr"].tolist() == [1e-3, 3e-4, 1e-4, 5e-2]
    assert table["config/margin"].tolist() == [0.2, 0.9, 0.5, 0.3]
    assert list(table["seed"]) == [101, 104, 102, 103]
    assert table["time_s"].tolist() == pytest.approx([2.0, 1.0, 1.0, 0.75])
    assert table["train_loss"].tolist() == pytest.approx([0.5, 1.5, 1.8, 40.0])
    assert table["train_active_triplets"].tolist() == [12.0, 7.0, 9.0, 5.0]
    assert table["train_grad_norm"].tolist() == [1.0] * 4
    assert table["train_batch_loss_std"].tolist() == [0.1] * 4


def test_a_reported_again_epoch_counts_once_and_the_later_row_wins(tmp_path):
    run = read_run(known_run(tmp_path))
    trial = next(t for t in run.trials if t.trial_id == "b0000001_00000")
    epochs, values = trial.series("val_recall_at_1")
    assert epochs == [1, 2, 3, 4]
    assert 0.99 not in values                 # the stale row for epoch 2 was replaced


def test_minimised_objective_sorts_small_first_and_nan_last(tmp_path):
    trials = [FakeTrial(f"c0000001_0000{i}", {"lr": 10.0 ** -(i + 2)}, history(2, objective="val_loss", obj=obj),
                        "completed") for i, obj in enumerate([(0.9, 0.5), (math.nan, math.nan), (0.4, 0.2)])]
    table = load_report(make_run(tmp_path, trials, objective=("val_loss", "min")))
    assert list(table["trial_id"]) == ["c0000001_00002", "c0000001_00000", "c0000001_00001"]
    assert table["objective_best"].tolist()[:2] == [0.2, 0.5] and math.isnan(table["objective_best"].iloc[2])


def test_a_health_pruned_trial_never_ranks_above_a_trusted_one(tmp_path):
    """A flatlined trial whose objective looked best sorts after every completed / ASHA-pruned /
    running trial, and the summary never names it (nor an errored one) as the best trial."""
    trials = [
        FakeTrial("d0000001_00000", {"lr": 1e-3}, history(3, obj=(0.2, 0.6)), "completed"),
        FakeTrial("d0000001_00001", {"lr": 1e-2}, history(3, obj=(0.9, 0.95)), "pruned_flatline",
                  "train_loss flat"),
        FakeTrial("d0000001_00002", {"lr": 1e-4}, history(2, obj=(0.1, 0.3)), "pruned_asha", "below cutoff"),
        FakeTrial("d0000001_00003", {"lr": 1e-5}, history(1, obj=(0.99, 0.99)), "error", "boom"),
    ]
    run = read_run(make_run(tmp_path, trials))
    table = load_report(run.path)
    assert list(table["outcome"]) == ["completed", "pruned_asha", "pruned_flatline", "error"]
    assert summarize(run, table)["best"]["trial_id"] == "d0000001_00000"


def test_interrupted_run_keeps_unfinished_trials_as_running_and_says_so(tmp_path):
    run = read_run(known_run(tmp_path, state="interrupted"))
    from hpsearch.results.report import build_table

    table = build_table(run)
    live = table.set_index("trial_id").loc["b0000001_00003"]
    assert live["outcome"] == "running" and "interrupted" in live["reason"]
    text = render(summarize(run, table))
    assert "the run was interrupted: 1 trial(s) without an outcome are shown as running" in text
    assert "hpsearch resume" in text


def test_error_txt_marks_a_trial_without_outcome_line_as_error(tmp_path):
    trial = FakeTrial("d0000001_00000", {"lr": 1e-3}, history(1), None,
                      error_txt="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n")
    table = load_report(make_run(tmp_path, [trial]))
    assert table.loc[0, "outcome"] == "error"
    assert table.loc[0, "reason"] == "RuntimeError: CUDA out of memory"


def test_summary_counts_budget_best_and_importance(tmp_path):
    run = read_run(known_run(tmp_path))
    from hpsearch.results.report import build_table

    summary = summarize(run, build_table(run))
    assert summary["outcomes"] == {"completed": 1, "pruned_asha": 1, "pruned_exploding": 1, "running": 1}
    assert summary["epochs_spent"] == 11 and summary["epoch_budget"] == 6 * 4
    assert summary["compute_saved"] == pytest.approx(1 - 11 / 24)
    assert summary["best"] == {"trial": 1, "trial_id": "b0000001_00000", "outcome": "completed", "value": 0.9, "epoch": 3,
                               "rank": "best", "window": 5, "why": "", "config": {"lr": 1e-3, "margin": 0.2}}
    assert summary["importance"] == {}         # 1 completed trial: too few to rank parameters
    assert summary["importance_source"] == ("needs at least 8 completed trials; the report's 1 completed trials "
                                            "(objective_best); optuna.journal is missing")
    assert "importance: not computed (needs at least 8 completed trials" in render(summary, width=500)


@pytest.mark.parametrize("state", ["interrupted", "running"])
def test_a_search_that_has_not_ended_claims_no_compute_saved(tmp_path, state):
    """Its trials still have epochs to run: the epochs so far, not a share saved by pruning."""
    run = read_run(known_run(tmp_path, state=state))
    from hpsearch.results.report import build_table

    summary = summarize(run, build_table(run))
    assert summary["compute_saved"] is None and summary["epochs_spent"] == 11
    text = render(summary, width=500)
    assert "epochs: 11 so far, of up to 24 without pruning (6 trials × 4 epochs); the search has not ended" in text
    assert "saved" not in text


def _finished_trials(n=8):
    trials = []
    for i in range(n):
        lr = 10.0 ** (-4 + 3 * i / (n - 1))
        trials.append(FakeTrial(f"e0000001_{i:05d}", {"lr": lr, "margin": 0.5},
                                history(3, obj=(0.1, 0.2 + 0.1 * i)), "completed", seed=i))
    return trials


def test_importance_from_the_report_rows_when_there_is_no_study(tmp_path):
    run = read_run(make_run(tmp_path, _finished_trials(), space=TRIPLET_SPACE))
    from hpsearch.results.report import build_table
    from hpsearch.results.summary import importance

    values, source = importance(run, build_table(run))
    assert set(values) == {"lr", "margin"} and values["lr"] > values["margin"]
    assert source.startswith("the report's 8 completed trials") and "optuna.journal is missing" in source
    fewer = read_run(make_run(tmp_path / "fewer", _finished_trials(7), space=TRIPLET_SPACE))
    assert importance(fewer, build_table(fewer)) == (
        {}, "needs at least 8 completed trials; the report's 7 completed trials (objective_best); "
            "optuna.journal is missing")


def test_importance_from_the_stored_study_when_it_has_complete_trials(tmp_path):
    import optuna

    from hpsearch.core.rundir import STUDY_NAME, study_storage
    from hpsearch.results.report import build_table
    from hpsearch.results.summary import importance

    path = make_run(tmp_path, _finished_trials(), space=TRIPLET_SPACE)
    study = optuna.create_study(study_name=STUDY_NAME, storage=study_storage(path), direction="maximize")
    dists = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
             "margin": optuna.distributions.FloatDistribution(0.05, 1.0)}
    for i in range(8):   # the stored study: here margin drives the value
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3, "margin": 0.1 + 0.1 * i},
                                                  distributions=dists, value=float(i)))
    run = read_run(path)
    values, source = importance(run, build_table(run))
    assert source == "8 complete trials of the study in optuna.journal"
    assert values["margin"] > values["lr"]
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={"lr": 1e-3, "margin": 0.5},
                                              distributions=dists, intermediate_values={1: 0.1}))
    assert len(study.trials) == 9
    path2 = make_run(tmp_path / "seven", _finished_trials(), space=TRIPLET_SPACE)
    seven = optuna.create_study(study_name=STUDY_NAME, storage=study_storage(path2), direction="maximize")
    for i in range(7):
        seven.add_trial(optuna.trial.create_trial(params={"lr": 1e-3, "margin": 0.1 + 0.1 * i},
                                                  distributions=dists, value=float(i)))
    run = read_run(path2)
    assert importance(run, build_table(run)) == (
        {}, "7 complete trials in optuna.journal; it needs at least 8 (2 searched parameters)")


def test_report_command_csv_is_exactly_load_report_and_json_holds_summary(tmp_path, capsys):
    path = known_run(tmp_path)
    csv, js = tmp_path / "t.csv", tmp_path / "t.json"
    assert main(["report", str(path), "--csv", str(csv), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    table = load_report(path)
    assert csv.read_text() == table.to_csv(index=False)
    back = pd.read_csv(csv)
    assert list(back.columns) == list(table.columns) and list(back["trial_id"]) == list(table["trial_id"])
    pd.testing.assert_series_equal(back["objective_best"], table["objective_best"])
    data = json.loads(js.read_text())
    assert [t["trial_id"] for t in data["data"]] == list(table["trial_id"])
    assert data["summary"]["best"]["trial_id"] == "b0000001_00000"
    for text in ("#4", "pruned_exploding", "completed 1, pruned_asha 1", "24 without pruning",
                 "best: #1 b0000001_00000 (completed) val_recall_at_1 0.9 at epoch 3"):
        assert text in out
    assert "train_batch_loss_std" not in out.splitlines()[1]      # compact by default: not in the header
    assert main(["report", str(path), "--all-columns"]) == 0
    assert "train_batch_loss_std" in capsys.readouterr().out


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`hpsearch report RUN | head -1`: the pipe closes before the report is written; the command
    ends quietly with 141 (128 + SIGPIPE), as a shell reports such a writer."""
    run = known_run(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # stdout buffered, as usual
    proc = subprocess.Popen([sys.executable, "-m", "hpsearch.cli", "report", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == "", err


def test_a_run_with_no_finished_trial_still_reports(tmp_path, capsys):
    trials = [FakeTrial("f0000001_00000", {"lr": 1e-3}, history(1, obj=(math.nan, math.nan)), "pruned_nonfinite",
                        "train_loss is nan"), FakeTrial("f0000001_00001", {"lr": 1e-2}, [], None)]
    path = make_run(tmp_path, trials)
    with (path / "outcomes.jsonl").open("a") as fh:      # failed before Ray made its directory
        fh.write(json.dumps({"trial_id": "f0000001_00002", "outcome": "error", "reason": "placement failed",
                             "epoch": None, "time": 1.0}) + "\n")
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "best: no trial has a finite objective yet" in out
    assert "pruned_nonfinite 1, error 1, running 1" in out
    table = load_report(path).set_index("trial_id")
    assert table.loc["f0000001_00001", ["outcome", "epochs"]].tolist() == ["running", 0]   # id from its dir name
    assert table.loc["f0000001_00002", ["outcome", "reason", "epochs"]].tolist() == ["error", "placement failed", 0]


@pytest.mark.parametrize("make_path", [
    lambda tmp: tmp / "missing",
    lambda tmp: tmp,                                     # a directory without search.yaml
    lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt",
])
def test_not_a_run_dir_is_one_line_exit_2(tmp_path, capsys, make_path):
    assert main(["report", str(make_path(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run_dir:" in err and "hpsearch run" in err


# --- diagnoses -------------------------------------------------------------------------------

def _diagnosed_run(tmp_path, kind):
    """Runs built to show one diagnosis each, and a healthy one that must show none."""
    n = 4
    trials = []
    for i in range(n):
        lr = [1e-4, 3e-4, 1e-3, 3e-3][i]
        comps = {"parse": (3.0, 2.0), "generate": (2.5, 1.5), "cycle_forward": (1.0, 0.8)}
        extra = {"train_active_triplets": 20.0}
        outcome, obj = "completed", (0.1, 0.4 + 0.1 * i)
        if kind == "dominant":
            comps["parse"] = (3000.0, 2000.0)              # a component x1000 larger than the others
        if kind == "no_triplets" and i < 2:
            extra["train_active_triplets"] = 0.0
        if kind == "divergence" and i >= 2:
            lr, outcome = [3e-2, 9e-2][i - 2], ["pruned_exploding", "pruned_nonfinite"][i - 2]
        trials.append(FakeTrial(f"a000000{i}_0000{i}", {"lr": lr, "w_parse": 1.0},
                                history(3, obj=obj, components=comps, **extra), outcome, seed=i))
    space = {"lr": {"loguniform": [1e-5, 1e-1]}, "w_parse": {"uniform": [0.0, 2.0]}}
    return load_report(make_run(tmp_path, trials, space=space, params={"w_cycle": 0.5}))


@pytest.mark.parametrize("kind, expected", [
    ("healthy", []),
    ("dominant", ["train_loss_parse is 99% of the summed loss components in 4/4 trials",
                  "consider w_parse ≈ 0.00"]),
    ("no_triplets", ["2/4 trials had no active triplets in their last epoch (train_active_triplets = 0): "
                     "#2, #1 — "]),
    ("divergence", ["2/4 trials diverged (pruned_exploding 1, pruned_nonfinite 1: #4, #3) "
                    "at lr 0.03–0.09; "
                    "finished trials used 0.0001–0.0003 — keep it below 0.03"]),
])
def test_diagnoses_fire_on_runs_built_to_show_them_and_stay_silent_otherwise(tmp_path, kind, expected):
    lines = diagnose(_diagnosed_run(tmp_path, kind), {"w_cycle": 0.5})
    assert len(lines) == (1 if expected else 0), lines
    for text in expected:
        assert text in lines[0]


def test_one_diverged_trial_names_its_lr_but_sets_no_bound(tmp_path):
    """A single divergence may come from another parameter (lr x weight_decay): no "keep it below"."""
    trials = [FakeTrial(f"a000000{i}_0000{i}", {"lr": lr}, history(3, obj=(0.1, 0.5 + 0.1 * i)), outcome, seed=i)
              for i, (lr, outcome) in enumerate([(1e-4, "completed"), (3e-4, "completed"), (1.0, "pruned_nonfinite")])]
    space = {"lr": {"loguniform": [1e-5, 3.0]}}
    (line,) = diagnose(load_report(make_run(tmp_path, trials, space=space)), {})
    assert line.endswith("1/3 trials diverged (pruned_nonfinite 1: #3) at lr 1; finished trials used 0.0001–0.0003")


def test_dominant_component_suggests_the_weight_that_levels_it(tmp_path):
    (line,) = diagnose(_diagnosed_run(tmp_path, "dominant"), {"w_cycle": 0.5})
    # last epoch: parse 2000, others (1.5 + 0.8) / 2 = 1.15 -> w_parse 1.0 * 1.15 / 2000
    assert f"consider w_parse ≈ {1.15 / 2000:.2g}" in line


def test_constant_objective_is_diagnosed(tmp_path):
    trials = [FakeTrial(f"a000000{i}_0000{i}", {"lr": 10.0 ** -(i + 2)}, history(3, obj=(0.0, 0.0)), "completed")
              for i in range(3)]
    (line,) = diagnose(load_report(make_run(tmp_path, trials)), {})
    assert line.startswith("val_recall_at_1 was 0 in all 3 trials")


def test_an_unreadable_study_falls_back_to_the_report_rows_and_says_so(tmp_path):
    from hpsearch.results.report import build_table
    from hpsearch.results.summary import importance

    path = make_run(tmp_path, _finished_trials(), space=TRIPLET_SPACE)
    (path / "optuna.journal").write_bytes(b"not a journal line\n" * 100)
    run = read_run(path)
    values, source = importance(run, build_table(run))
    assert set(values) == {"lr", "margin"}
    assert source.startswith("the report's 8 completed trials (objective_best); optuna.journal could not be read (")


# Four finished trials whose order differs by each objective.rank: a lucky epoch (peak), a noisy
# plateau, a late riser and a steady one (values hand-written, val_recall_at_1, max).
RANK_CURVES = {
    "d0000001_00000": [0.50, 0.95, 0.60, 0.62, 0.61, 0.60],     # one lucky epoch
    "d0000001_00001": [0.70, 0.80, 0.84, 0.78, 0.83, 0.79],     # a noisy plateau near 0.81
    "d0000001_00002": [0.10, 0.20, 0.30, 0.40, 0.50, 0.86],     # a late riser
    "d0000001_00003": [0.70, 0.74, 0.75, 0.76, 0.77, 0.78],     # steady
}


@pytest.mark.parametrize("rank, order", [
    ({}, ["d0000001_00000", "d0000001_00002", "d0000001_00001", "d0000001_00003"]),
    ({"rank": "best"}, ["d0000001_00000", "d0000001_00002", "d0000001_00001", "d0000001_00003"]),
    ({"rank": "last"}, ["d0000001_00002", "d0000001_00001", "d0000001_00003", "d0000001_00000"]),
    ({"rank": "mean"}, ["d0000001_00001", "d0000001_00003", "d0000001_00000", "d0000001_00002"]),
    ({"rank": "mean", "window": 2}, ["d0000001_00001", "d0000001_00003", "d0000001_00002", "d0000001_00000"]),
])
def test_objective_rank_orders_the_trials_and_names_the_best(tmp_path, rank, order):
    trials = [FakeTrial(tid, {"lr": 1e-3 * (i + 1)}, [{"train_loss": 1.0, "val_recall_at_1": v} for v in values],
                        "completed", seed=i) for i, (tid, values) in enumerate(RANK_CURVES.items())]
    run_dir = make_run(tmp_path, trials, max_epochs=6, rank=rank)
    table = load_report(run_dir)
    assert list(table["trial_id"]) == order
    column = {"best": "objective_best", "last": "objective_last", "mean": "objective_mean"}[rank.get("rank", "best")]
    assert table.attrs["rank"] == column
    best = summarize(read_run(run_dir), table)["best"]
    values = RANK_CURVES[order[0]]
    window = rank.get("window", 5)
    expected = {"objective_best": max(values), "objective_last": values[-1],
                "objective_mean": sum(values[-window:]) / len(values[-window:])}[column]
    assert best["trial_id"] == order[0] and best["value"] == pytest.approx(expected)
    # the epoch a retrain of the best config stops at: its best epoch, or its last
    assert best["epoch"] == (values.index(max(values)) + 1 if column == "objective_best" else 6)
    title, head = format_table(table, width=400).splitlines()[:2]
    headers = head.split()
    assert title.endswith("(max)" if column == "objective_best" else f"each trial ranked by {table.attrs['ranked_by']}")
    assert render(summarize(read_run(run_dir), table), 200).count(table.attrs["ranked_by"]) == (column != "objective_best")
    assert headers[:4] == (["trial", "outcome", "objective_best", "epochs"] if column == "objective_best"
                           else ["trial", "outcome", column, "objective_best"])
    assert len(headers) == len(set(headers))                 # the ranking column is shown once
    # run.best: that trial, and a config that trains it to the epoch its ranking value stands for
    best_run = hpsearch.load(run_dir).best
    assert best_run.trial_id == order[0] and best_run.config["epochs"] == best["epoch"]
