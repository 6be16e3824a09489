"""Trial faults in a real (local) Ray search, as a user meets them in the run's report:

- a trial that raises ends as ``error`` with the exception's last line as its reason, and the other
  trials of the search go on to the end;
- a trial whose worker process is killed (SIGKILL of the pid it reports) is retried from its last
  checkpoint up to ``budget.max_failures`` times and finishes; the report shows every epoch once;
  with ``max_failures: 0`` the same kill ends it as ``error`` and the search goes on;
- a model that stops reporting the objective fails its trial with a reason naming the metric and
  what was reported.

All slow: one local Ray with 2 CPUs for the module; the trials are scripted toy curves
(tests/fixtures/toy_models.py) with short sleeps per epoch.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import psutil
import pytest

from hpsearch.cli import main
from hpsearch.core.rundir import read_trial_results, study_storage
from hpsearch.results.report import load_report, read_run
from tests.fixtures.toy_models import MINIMAL, SCRIPTED


def rows_by_quality(run_dir: Path) -> dict[float, list[dict]]:
    """Each trial's result rows (as Ray wrote them, duplicates included), keyed by its searched quality."""
    found = {}
    for trial_dir in sorted(run_dir.glob("trial_*")):
        rows = read_trial_results(trial_dir)
        if rows:
            found[round(rows[0]["config"]["quality"], 6)] = rows
    return found


def report_rows(run_dir: Path) -> dict[float, dict]:
    table = load_report(run_dir)
    return {round(row["config/quality"], 6): row for row in table.to_dict("records")}


def base(**change) -> dict:
    raw = {"model": SCRIPTED, "seed": 3, "epochs": 6, "params": {"epoch_sleep": 0.25},
           "space": {"quality": {"uniform": [0.2, 0.9]}},
           "warm_start": [{"quality": 0.9}, {"quality": 0.5}, {"quality": 0.3}],
           "budget": {"num_samples": 3, "max_concurrent": 2, "max_failures": 1},
           "scheduler": {"grace_period": 6}, "checkpoint": {"interval": 2}}
    raw.update(change)
    return raw


# ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_raising_trial_is_an_error_with_its_last_line_and_the_search_goes_on(run_search, tmp_path, capsys):
    raw = base(params={"crash_at": 3, "crash_times": 99, "marker_dir": str(tmp_path)},
               space={"quality": {"uniform": [0.2, 0.9]}, "crash_times": {"choice": [0, 99]}},
               warm_start=[{"quality": 0.9, "crash_times": 99}, {"quality": 0.5, "crash_times": 0},
                           {"quality": 0.3, "crash_times": 0}])
    code, out, run_dir = run_search(raw, "raises")
    assert code == 0, out
    report = report_rows(run_dir)
    crashed = report[0.9]
    assert (crashed["outcome"], crashed["reason"]) == ("error", "RuntimeError: scripted crash at epoch 3")
    assert crashed["epochs"] == 2                                  # what it finished before it raised
    for quality in (0.5, 0.3):                                     # the rest of the search ran to the end
        assert (report[quality]["outcome"], report[quality]["epochs"]) == ("completed", 6)
    # it was retried (max_failures: 1) from its checkpoint, and raised again: 2 attempts
    assert len(list(tmp_path.glob("crash-99-*"))) == 2
    assert "error             e.g. #1: RuntimeError: scripted crash at epoch 3" in out
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "RuntimeError: scripted crash at epoch 3" in printed and "error" in printed


def killer(quality: float, at_epoch: int, killed: list):
    """A watcher that SIGKILLs the worker process of the trial with ``quality`` once it has
    reported ``at_epoch``: the pid Ray records in the trial's result, checked to be a Ray worker
    under this test process before the signal is sent."""
    ours = os.getpid()

    def watch(run_dir: Path) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not killed:
            rows = rows_by_quality(run_dir).get(quality, []) if run_dir.exists() else []
            row = next((r for r in rows if r["epoch"] >= at_epoch), None)
            if row is not None:
                process = psutil.Process(row["pid"])
                assert process.name().startswith("ray::") and ours in {p.pid for p in process.parents()}
                process.send_signal(signal.SIGKILL)
                killed.append((row["pid"], row["epoch"]))
                return
            time.sleep(0.05)

    return watch


@pytest.mark.slow
def test_a_killed_worker_is_retried_from_its_checkpoint_and_the_report_shows_each_epoch_once(run_search):
    killed: list = []
    code, out, run_dir = run_search(base(), "killed", during=killer(0.9, 3, killed))
    assert code == 0, out
    assert killed, "the watcher never saw the trial reach epoch 3"
    pid, epoch_at_kill = killed[0]
    rows = rows_by_quality(run_dir)[0.9]
    after = [r for r in rows if r["pid"] != pid]
    assert after, "the trial never ran again after its worker was killed"
    # retried from its checkpoint (every 2 epochs): not from scratch, and no epoch skipped
    assert after[0]["iterations_since_restore"] == 1
    assert 2 <= after[0]["epoch"] <= epoch_at_kill + 1 and after[0]["epoch"] % 2 == 1
    assert after[-1]["epoch"] == 6
    report = report_rows(run_dir)
    assert (report[0.9]["outcome"], report[0.9]["epochs"]) == ("completed", 6)
    trial = next(t for t in read_run(run_dir).trials if round(t.config["quality"], 6) == 0.9)
    assert [r["epoch"] for r in trial.rows] == [1, 2, 3, 4, 5, 6]       # in the report: each epoch once
    assert all(report[q]["outcome"] == "completed" for q in report)


@pytest.mark.slow
def test_with_max_failures_0_a_killed_worker_ends_its_trial_as_an_error_and_the_search_goes_on(run_search):
    killed: list = []
    raw = base(budget={"num_samples": 3, "max_concurrent": 2, "max_failures": 0})
    code, out, run_dir = run_search(raw, "killed0", during=killer(0.9, 3, killed))
    assert code == 0, out
    assert killed
    report = report_rows(run_dir)
    assert report[0.9]["outcome"] == "error"
    assert "died" in report[0.9]["reason"].lower() or "unavailable" in report[0.9]["reason"].lower(), \
        report[0.9]["reason"]
    assert {report[q]["outcome"] for q in (0.5, 0.3)} == {"completed"}


@pytest.mark.slow
def test_a_model_that_stops_reporting_the_objective_fails_naming_the_metric(run_search):
    """tests.fixtures.toy_models:Minimal reports ``val_<metric>``; here it reports ``val_acc`` while
    the objective is ``val_f1``: the trial fails at its first epoch and says both, and the Optuna
    study records it as failed, never with a value."""
    raw = {"model": MINIMAL, "epochs": 3, "params": {"metric": "acc"},
           "space": {"x": {"uniform": [0.1, 0.9]}}, "objective": {"metric": "val_f1", "mode": "max"},
           "budget": {"num_samples": 1, "max_failures": 0}, "scheduler": {"grace_period": 1}}
    code, out, run_dir = run_search(raw, "noobjective")
    assert code == 1, out                                               # every trial failed
    (row,) = load_report(run_dir).to_dict("records")
    assert row["outcome"] == "error"
    assert row["reason"] == ("ValueError: objective.metric 'val_f1' was not reported by model "
                             "'tests.fixtures.toy_models:Minimal' at epoch 1; it reported: "
                             "train_batch_loss_std, train_loss, val_acc")      # what the model reported, not the timing
    study = optuna.load_study(study_name="hpsearch", storage=study_storage(run_dir))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
